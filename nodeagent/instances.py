"""The supervisor of model-server instances: one ``vllm serve`` process per model on this node.

The node agent builds one `Supervisor` (state dir, GPU inventory, command template) and its
HTTP layer calls `open` once, then `start(spec)`, `stop(name)` and `list()`, and `close()` on
SIGTERM. Each instance runs in its own process group on a port the supervisor picks, with
``CUDA_VISIBLE_DEVICES`` set to the GPUs the inventory assigned it, and output appended to
``<state dir>/logs/<name>.log``. One asyncio task per instance watches it:

    starting ──/health 200 and /v1/models lists the name──► ready
        ▲                                                     │ /health fails: back to starting
        └──── exponential backoff ◄── the process exits ◄─────┘
              (CrashLoopBackOff after repeated crashes, with the log's last lines)

`stop` is SIGTERM to the group, a grace period, then SIGKILL of the group; the GPUs are freed
once no process of the group is left. Every spawn and stop rewrites the on-disk record
(`nodeagent.record`), so `open` in a restarted agent adopts each recorded instance whose process
is still ours, alive, answering and bound to the current instance host, and stops (kills the
group of) every other one: never an orphan process, never two instances on one GPU. An adopted
instance is advertised under the current agent's advertised host. Must not decide what to run:
the controller does, through the agent's API.
"""

from __future__ import annotations

import asyncio
import dataclasses
import hashlib
import logging
import os
import pathlib
import re
import time
from collections.abc import Awaitable, Callable, Mapping

import httpx

from nodeagent import command, gpus, instance, probe, processes, record, restarts

_log = logging.getLogger(__name__)
Clock = Callable[[], float]
Sleep = Callable[[float], Awaitable[None]]


class InstanceExists(Exception):
    """`start` of a name that runs with another spec, or is stopping; stop it first."""


class StartError(Exception):
    """The instance's command could not be run at all (missing executable, bad template)."""


@dataclasses.dataclass(frozen=True)
class Settings:
    """How the supervisor runs instances; the defaults suit a GPU host, tests shorten them.

    `host` is the address instances bind (0.0.0.0 or :: for every interface: probes still
    connect on loopback); `advertise_host` is the host put in their base_url (None: where the
    probes connect). `nodeagent.addresses` checks both and picks the CLI's default.
    """

    host: str = "127.0.0.1"
    advertise_host: str | None = None
    template: tuple[str, ...] = command.DEFAULT_TEMPLATE
    policy: restarts.Policy = dataclasses.field(default_factory=restarts.Policy)
    grace: float = 30.0
    probe_interval: float = 1.0  # once ready: /health and the process
    startup_probe_interval: float = 0.05  # while starting: the agent adds at most this to "ready"
    probe_timeout: float = 2.0
    log_lines: int = 20
    log_limit: int = 64 * 2**20  # bytes of an instance's log before it is rotated at a restart


class Supervisor:
    """Starts, watches, restarts and stops this node's instances; one per agent.

    Not thread-safe: use it from one event loop. `environment` is the base environment of
    instances (default: the agent's own); `clock` and `sleep` are injectable for tests.
    """

    def __init__(
        self,
        state_dir: pathlib.Path,
        inventory: gpus.Inventory,
        settings: Settings = Settings(),
        *,
        environment: Mapping[str, str] | None = None,
        http: httpx.AsyncClient | None = None,
        clock: Clock = time.monotonic,
        sleep: Sleep = asyncio.sleep,
    ) -> None:
        command.check_template(settings.template)
        self.state_dir = state_dir
        self.inventory = inventory
        self.settings = settings
        self._environment = dict(os.environ if environment is None else environment)
        self._http = http or httpx.AsyncClient()
        self._owns_http = http is None
        self._clock = clock
        self._sleep = sleep
        self._instances: dict[str, instance.Instance] = {}

    async def __aenter__(self) -> Supervisor:
        await self.open()
        return self

    async def __aexit__(self, *_: object) -> None:
        await self.close()

    def list(self) -> list[instance.InstanceStatus]:
        """Every instance, by name."""
        return [self._instances[name].status() for name in sorted(self._instances)]

    def get(self, name: str) -> instance.InstanceStatus | None:
        """One instance, or None."""
        found = self._instances.get(name)
        return None if found is None else found.status()

    def endpoint(self, name: str) -> tuple[str, str | None] | None:
        """Where the agent reaches `name`'s instance and the API key it takes, or None."""
        found = self._instances.get(name)
        return None if found is None else (found.url, command.api_key(found.argv))

    async def open(self) -> dict[str, str]:
        """Adopts or stops what the record lists; returns name -> "adopted" or "stopped".

        Raises `record.RecordError` when the record cannot be read (nothing is touched then).
        """
        outcome = {}
        for entry in record.load(self.state_dir):
            tracked = self._instances.get(entry.name)
            if tracked is not None and tracked.pid == entry.pid:
                continue  # ours already (open called twice)
            if tracked is None and await self._adoptable(entry):
                self._adopt(entry)
                outcome[entry.name] = "adopted"
            else:
                await self._stop_recorded(entry)
                outcome[entry.name] = "stopped"
        self._save()
        return outcome

    async def start(self, spec: command.ModelSpec) -> instance.InstanceStatus:
        """Starts an instance of `spec` and returns its status (normally `starting`).

        Idempotent: the same spec again returns the running inst. Raises
        `command.SpecError` (bad spec), `gpus.Unplaceable` (no GPUs for it: the numbers are in
        the message), `InstanceExists` (another spec under that name, or stopping) and
        `StartError` (the command cannot be run); nothing is left running when it raises.
        """
        command.check(spec)
        existing = self._instances.get(spec.name)
        if existing is not None:
            same = command.render(self.settings.template, spec, existing.host, existing.port)
            if same == existing.argv and existing.state is not instance.State.STOPPING:
                existing.spec = spec
                return existing.status()
            raise InstanceExists(
                f"model {spec.name!r} already has an instance ({existing.state}); stop it first"
            )
        port = processes.free_port(self.settings.host)
        need = gpus.Need(spec.gpu_count, spec.gpu_memory_bytes)
        assigned = self.inventory.assign(spec.name, need) if need.count else ()
        inst = instance.Instance(
            name=spec.name,
            path=spec.path,
            argv=command.render(self.settings.template, spec, self.settings.host, port),
            host=self.settings.host,
            port=port,
            gpus=assigned,
            log=self._log_path(spec.name),
            spec=spec,
            advertise=self.settings.advertise_host,
        )
        try:
            self._spawn(inst)
        except OSError as exc:
            self.inventory.release(spec.name)
            raise StartError(
                f"cannot run {inst.argv[0]!r} for model {spec.name!r}: {exc.strerror}; "
                "install vllm (pip install 'llmctl[node-vllm]') or fix the command template"
            ) from exc
        self._instances[spec.name] = inst
        self._save()
        self._watch_over(inst)
        return inst.status()

    async def stop(self, name: str) -> bool:
        """Stops `name`'s instance (the whole process group) and frees its GPUs and port.

        Returns False when there is no such inst. Idempotent; waits up to the grace period
        and then kills.
        """
        inst = self._instances.get(name)
        if inst is None:
            return False
        inst.state = instance.State.STOPPING
        if inst.task is not None:
            inst.task.cancel()
            await asyncio.gather(inst.task, return_exceptions=True)
        await self._end(inst)
        self._instances.pop(name, None)
        self.inventory.release(name)
        self._save()
        return True

    async def close(self) -> None:
        """Stops every instance (on agent SIGTERM): no process is left behind."""
        await asyncio.gather(*(self.stop(name) for name in list(self._instances)))
        if self._owns_http:
            await self._http.aclose()

    def _log_path(self, name: str) -> pathlib.Path:
        # Served names may contain "/" (Qwen/Qwen2.5-0.5B); the digest keeps two names apart.
        slug = re.sub(r"[^A-Za-z0-9._-]+", "_", name)[:60]
        digest = hashlib.sha256(name.encode()).hexdigest()[:10]
        return self.state_dir / "logs" / f"{slug}-{digest}.log"

    def _spawn(self, inst: instance.Instance) -> None:
        environment = {**self._environment}
        environment["CUDA_VISIBLE_DEVICES"] = ",".join(str(i) for i in inst.gpus)
        if command.LORA_FLAG in inst.argv:  # vLLM's runtime LoRA routes (`nodeagent.loras`)
            environment[command.LORA_ENV] = "True"
        proc = processes.spawn(
            inst.argv, inst.log, environment, self.settings.log_limit, command.redacted(inst.argv)
        )
        found = processes.identity(proc.pid)
        inst.proc, inst.pid, inst.pgid = proc, proc.pid, proc.pid
        inst.proc_start = found[1] if found is not None else 0
        inst.started_at = time.time()
        inst.adopted = False
        if inst.state is not instance.State.CRASH_LOOP_BACK_OFF:  # it stays so until it is ready
            inst.state = instance.State.STARTING

    def _exit_reason(self, inst: instance.Instance) -> str | None:
        """None while the instance's process runs, else how it ended."""
        if inst.proc is not None:
            code = inst.proc.poll()
            return None if code is None else _describe_exit(code)
        assert inst.pid is not None
        if processes.identity(inst.pid) == (inst.pgid, inst.proc_start):
            return None
        return "the adopted process exited"

    def _watch_over(self, inst: instance.Instance) -> None:
        task = asyncio.create_task(self._supervise(inst), name=f"llmctl instance {inst.name}")
        task.add_done_callback(lambda done: _report_failure(inst, done))
        inst.task = task

    async def _supervise(self, inst: instance.Instance) -> None:
        """The instance's life: watch it, and restart it with backoff when it exits."""
        while True:
            reason = await self._watch(inst)
            await self._end(inst)
            delay = self._crashed(inst, reason)
            await self._sleep(delay)
            try:
                self._spawn(inst)
            except OSError as exc:
                inst.pid = inst.pgid = inst.proc = None
                inst.last_error = f"cannot run {inst.argv[0]!r}: {exc.strerror}"
            self._save()

    async def _watch(self, inst: instance.Instance) -> str:
        """Probes the instance until its process exits; returns how it exited."""
        while inst.pid is not None:
            reason = self._exit_reason(inst)
            if reason is not None:
                return reason
            await self._probe(inst)
            ready = inst.state is instance.State.READY
            settings = self.settings
            await self._sleep(settings.probe_interval if ready else settings.startup_probe_interval)
        return inst.last_error or "it could not be started"

    async def _probe(self, inst: instance.Instance) -> None:
        timeout = self.settings.probe_timeout
        if inst.state is instance.State.READY:
            problem = await probe.healthy(self._http, inst.url, timeout)
            if problem is not None:
                inst.state, inst.last_error = instance.State.STARTING, problem
            return
        key = command.api_key(inst.argv)
        if await probe.ready(self._http, inst.url, inst.name, timeout, key) is None:
            inst.state = instance.State.READY

    def _crashed(self, inst: instance.Instance, reason: str) -> float:
        """Counts a crash and returns the backoff before the next start."""
        policy = self.settings.policy
        now = self._clock()
        inst.crashes = policy.recent((*inst.crashes, now), now)
        inst.restarts += 1
        tail = processes.log_tail(inst.log, self.settings.log_lines)
        key = command.api_key(inst.argv)  # vllm serve logs its non-default arguments
        inst.log_tail = tail if not key else tail.replace(key, command.MASK)
        looping = policy.crash_looping(len(inst.crashes))
        inst.state = instance.State.CRASH_LOOP_BACK_OFF if looping else instance.State.STARTING
        inst.last_error = f"{reason} ({len(inst.crashes)} crashes recently)"
        return policy.delay(len(inst.crashes))

    async def _end(self, inst: instance.Instance) -> None:
        """Ends whatever is left of the instance's process group (idempotent)."""
        if inst.pgid is None:
            return
        proc = inst.proc
        await processes.terminate_group(
            inst.pgid,
            self.settings.grace,
            reap=(proc.poll if proc is not None else lambda: None),
            sleep=self._sleep,
        )

    async def _adoptable(self, entry: record.InstanceRecord) -> bool:
        if processes.identity(entry.pid) != (entry.pgid, entry.proc_start):
            return False
        if entry.host != self.settings.host:  # it listens where instances no longer should
            return False
        url = instance.Instance(
            entry.name, entry.path, entry.argv, entry.host, entry.port, entry.gpus, pathlib.Path()
        ).url
        key = command.api_key(entry.argv)
        problem = await probe.ready(self._http, url, entry.name, self.settings.probe_timeout, key)
        if problem is not None:
            return False
        try:
            self.inventory.claim(entry.name, entry.gpus)
        except gpus.Unplaceable:
            return False
        return True

    def _adopt(self, entry: record.InstanceRecord) -> None:
        inst = instance.Instance(
            name=entry.name,
            path=entry.path,
            argv=entry.argv,
            host=entry.host,
            port=entry.port,
            gpus=entry.gpus,
            log=pathlib.Path(entry.log),
            pid=entry.pid,
            pgid=entry.pgid,
            proc_start=entry.proc_start,
            started_at=entry.started_at,
            state=instance.State.READY,
            adopted=True,
            advertise=self.settings.advertise_host,
        )
        self._instances[entry.name] = inst
        self._watch_over(inst)

    async def _stop_recorded(self, entry: record.InstanceRecord) -> None:
        """Kills the group of a recorded instance that is not adopted, if it is still ours."""
        found = processes.identity(entry.pid)
        # A live pid with another start time is someone else's now: leave its group alone.
        # With the leader gone, a group with its id can only hold the leader's children.
        if found is None or found == (entry.pgid, entry.proc_start):
            await processes.terminate_group(entry.pgid, self.settings.grace, sleep=self._sleep)

    def _save(self) -> None:
        entries = [i.to_record() for i in self._instances.values()]
        record.save(self.state_dir, [e for e in entries if e is not None])


def _describe_exit(code: int) -> str:
    if code < 0:
        return f"the process was killed by signal {-code}"
    return f"the process exited with code {code}"


def _report_failure(inst: instance.Instance, task: asyncio.Task[None]) -> None:
    """Logs an unexpected end of an instance's supervision (a full disk, a bug) with its cause."""
    if task.cancelled() or task.exception() is None:
        return
    _log.error("supervision of instance %r ended", inst.name, exc_info=task.exception())
    inst.last_error = f"the agent stopped supervising it: {task.exception()!r}"
