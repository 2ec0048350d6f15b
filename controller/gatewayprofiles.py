"""``llmctl gateway --profiles FILE``: what the gateway's resolver learned, kept across restarts.

At start, `ProfileFile.restore` imports the file (`Resolver.import_profiles`) when it exists, so a
restarted gateway does not start cold; `keep` then saves `Resolver.export_profiles` every
`SAVE_EVERY_S` and once more when the gateway stops. Saving writes a temporary file beside the
target and renames it over, so a crash mid-write never leaves half a document. A file that
cannot be read or is not a profiles document is reported in one line and ignored (the next save
replaces it): learned figures are a head start, never a reason not to serve. `check` refuses,
before anything starts, a path whose directory does not exist or cannot be written.
Called by `controller.gatewaycommand`; imports the resolver inside its functions only.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import pathlib
import tempfile
from collections.abc import AsyncIterator, Callable
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from runtimestate import resolver

SAVE_EVERY_S = 60.0


class ProfileFile:
    """One profiles file; ``say`` prints a line for the operator (stderr)."""

    def __init__(self, path: pathlib.Path, say: Callable[[str], None]) -> None:
        self.path = path
        self._say = say

    def check(self) -> str | None:
        """Why the file could not be saved (the problem and the fix), or None."""
        folder = self.path.parent
        if self.path.is_dir():
            return f"--profiles {self.path} is a directory; give a file path such as {folder}/x"
        if not folder.is_dir():
            return f"--profiles {self.path}: directory {folder} does not exist; create it first"
        if not os.access(folder, os.W_OK):
            return f"--profiles {self.path}: directory {folder} is not writable by this user"
        return None

    def restore(self, r: resolver.Resolver) -> None:
        """Import the file into ``r`` when it exists; a bad one is reported and ignored."""
        from runtimestate import resolver as resolving

        try:
            text = self.path.read_text(encoding="utf-8")
        except FileNotFoundError:
            return
        except (OSError, UnicodeDecodeError) as exc:
            self._say(f"llmctl gateway: cannot read --profiles {self.path} ({exc}); starting cold")
            return
        try:
            restored = r.import_profiles(text)
        except resolving.ProfileError as exc:
            self._say(
                f"llmctl gateway: --profiles {self.path} is not a profiles document ({exc}); "
                "starting cold, and the next save replaces it"
            )
            return
        self._say(f"llmctl gateway: restored {len(restored)} provider profiles from {self.path}")

    def save(self, r: resolver.Resolver) -> None:
        """Write ``r``'s profiles atomically; a failure is reported and the old file kept."""
        text = json.dumps(r.export_profiles(), indent=1, sort_keys=True) + "\n"
        try:
            fd, temporary = tempfile.mkstemp(prefix=f".{self.path.name}.", dir=self.path.parent)
            try:
                with os.fdopen(fd, "w", encoding="utf-8") as out:
                    out.write(text)
                os.replace(temporary, self.path)
            except BaseException:
                with contextlib.suppress(OSError):
                    os.unlink(temporary)
                raise
        except OSError as exc:
            self._say(f"llmctl gateway: cannot save --profiles {self.path} ({exc})")

    @contextlib.asynccontextmanager
    async def keep(self, r: resolver.Resolver) -> AsyncIterator[None]:
        """Save every `SAVE_EVERY_S` while the block runs, and once more when it ends."""

        async def every() -> None:
            while True:
                await asyncio.sleep(SAVE_EVERY_S)
                self.save(r)

        task = asyncio.create_task(every())
        try:
            yield
        finally:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
            self.save(r)
