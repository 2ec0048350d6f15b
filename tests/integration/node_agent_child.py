"""A node agent's supervisor in a process of its own, for the adoption tests to kill.

``python -m tests.integration.node_agent_child STATE_DIR NAME...`` starts one emulated vLLM
instance per name (each forks a ``sleep`` child and writes its pid to ``STATE_DIR/<name>.child``),
prints one JSON line ``{name: {"pid", "port", "child"}}`` once all are ready, then waits to be
killed: the test SIGKILLs it to play an agent that died without stopping anything.
"""

from __future__ import annotations

import asyncio
import json
import pathlib
import sys

from nodeagent import command, gpus, instances
from tests.integration import node_instances_fixtures as fx


async def main(state_dir: pathlib.Path, names: list[str]) -> None:
    template = fx.shell(f"sleep 300 & echo $! > {state_dir}/{{name}}.child")
    inventory = gpus.Inventory(gpus.parse("2x80GiB"))
    supervisor = instances.Supervisor(state_dir, inventory, fx.settings(template))
    await supervisor.open()
    for name in names:
        await supervisor.start(command.ModelSpec(name=name, path=f"/weights/{name}"))
    shown = {}
    for name in names:
        status = await fx.ready(supervisor, name)
        child = int((state_dir / f"{name}.child").read_text())
        shown[name] = {"pid": status.pid, "port": status.port, "child": child}
    print(json.dumps(shown), flush=True)
    await asyncio.Event().wait()


if __name__ == "__main__":
    asyncio.run(main(pathlib.Path(sys.argv[1]), sys.argv[2:]))
