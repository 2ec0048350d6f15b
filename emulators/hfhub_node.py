"""State of the emulated Hugging Face Hub: its repos, pull rate, download faults and log.

`HubNode` is the one node of the hub's `server.Host`. Tests read `downloads` (one `Download` per
file GET: which range was asked and how many bytes were sent) to prove that a resumed download
sent only the missing bytes, and arm `DownloadFault`s to break a file's next GETs. No HTTP here:
`emulators.hfhub` serves it. Imports nothing of ours.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from typing import Any

from emulators import hfhub_repos, server


@dataclasses.dataclass(frozen=True)
class RepoSpec:
    """How to build a repo at start and on reset: see `hfhub_repos.Repo`."""

    repo_id: str
    files: Mapping[str, hfhub_repos.FileSpec]
    private: bool = False
    gated: bool = False
    tokens: frozenset[str] = frozenset()

    def build(self) -> hfhub_repos.Repo:
        """A fresh repo with one commit on `main`."""
        return hfhub_repos.Repo(
            self.repo_id,
            self.files,
            private=self.private,
            gated=self.gated,
            tokens=self.tokens,
        )


@dataclasses.dataclass
class DownloadFault:
    """Break the next `times` GETs of `path` (in any repo).

    `status` set: answer that status (e.g. 500) before any byte. Otherwise reset the connection
    after sending `after_bytes` bytes of the body.
    """

    path: str
    after_bytes: int = 0
    status: int | None = None
    times: int = 1

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> DownloadFault:
        """From the admin API's JSON; raises TypeError on unknown fields."""
        return cls(**data)


@dataclasses.dataclass(frozen=True)
class Download:
    """One file GET: the range start asked for, the bytes sent, how it ended."""

    repo_id: str
    path: str
    start: int
    sent: int
    outcome: str  # "complete", "reset", "client gone" or "status <n>"


class HubNode(server.Node):
    """The hub's repos and counters. Mutate `repos`, `pull_rate` and `download_faults` freely."""

    def __init__(
        self, index: int, repos: Sequence[RepoSpec] = (), pull_rate: float | None = None
    ) -> None:
        super().__init__(index)
        self.specs = list(repos)
        self.initial_pull_rate = pull_rate
        self.repos: dict[str, hfhub_repos.Repo] = {}
        self.pull_rate = pull_rate
        self.download_faults: list[DownloadFault] = []
        self.downloads: list[Download] = []
        self._build()

    def _build(self) -> None:
        self.repos = {spec.repo_id: spec.build() for spec in self.specs}
        self.pull_rate = self.initial_pull_rate
        self.download_faults = []
        self.downloads = []

    def add(self, spec: RepoSpec) -> hfhub_repos.Repo:
        """Create (or replace) a repo; it survives `reset`."""
        self.specs = [s for s in self.specs if s.repo_id != spec.repo_id] + [spec]
        self.repos[spec.repo_id] = spec.build()
        return self.repos[spec.repo_id]

    def take_fault(self, path: str) -> DownloadFault | None:
        """The fault armed for `path`, counting one use; None when there is none."""
        for fault in self.download_faults:
            if fault.path == path and fault.times > 0:
                fault.times -= 1
                if fault.times == 0:
                    self.download_faults.remove(fault)
                return fault
        return None

    def bytes_sent(self, path: str) -> int:
        """Body bytes sent for `path` over every GET so far."""
        return sum(d.sent for d in self.downloads if d.path == path)

    def state(self) -> dict[str, Any]:
        return {
            **super().state(),
            "repos": {
                repo_id: {"branches": dict(repo.branches), "commits": list(repo.commits)}
                for repo_id, repo in self.repos.items()
            },
            "pull_rate": self.pull_rate,
            "download_faults": [dataclasses.asdict(f) for f in self.download_faults],
            "downloads": [dataclasses.asdict(d) for d in self.downloads],
        }

    def patch(self, changes: Mapping[str, Any]) -> None:
        """Admin `POST /_emulator/state`: `pull_rate`, `download_faults`, `publish`.

        `publish` is `{"repo", "branch"?, "files": {path: size | null}}`: a new commit of
        generated files (sizes) or deletions on a branch.
        """
        rest = dict(changes)
        if "pull_rate" in rest:
            rate = rest.pop("pull_rate")
            self.pull_rate = None if rate is None else float(rate)
        if "download_faults" in rest:
            self.download_faults = [DownloadFault.from_dict(f) for f in rest.pop("download_faults")]
        if "publish" in rest:
            publish = rest.pop("publish")
            repo = self.repos[str(publish["repo"])]
            files = {str(p): None if s is None else int(s) for p, s in publish["files"].items()}
            repo.publish(files, str(publish.get("branch", "main")))
        super().patch(rest)

    def reset(self) -> None:
        super().reset()
        self._build()
