"""Benchmark: apply a large declarative file (1,000 backends, 200 models, 20 pools).

Prints, for SQLite and for Postgres, the time to validate and apply the file in one
transaction, to re-apply it unchanged, and to export it. Postgres is the server named by
``LLMCTL_BENCH_DATABASE_URL`` (a plain postgresql:// URL to a database it may fill), else a
throwaway server started the way the test harness does.

    .venv/bin/python benchmarks/declare.py [--backends 1000] [--models 200] [--pools 20] [--json]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import migrations
from runtimestate import database
from runtimestate.desired import manifest, store


def fleet(backends: int, models: int, pools: int) -> str:
    """A file in which every backend and model is in exactly one pool."""
    docs = []
    for i in range(backends):
        docs.append(
            "apiVersion: llmctl/v1\nkind: Backend\n"
            f"metadata: {{name: node-{i:04d}, labels: {{zone: z{i % 4}}}}}\n"
            f'spec: {{type: ollama, url: "http://10.1.{i // 250}.{i % 250}:11434", maxPulls: 2}}\n'
        )
    for i in range(models):
        docs.append(
            f'apiVersion: llmctl/v1\nkind: Model\nmetadata: {{name: "model-{i:03d}:7b"}}\n'
            f"spec: {{contextLength: {4096 * (1 + i % 8)}, capabilities: [chat, stream]}}\n"
        )
    for p in range(pools):
        members_b = ", ".join(f"node-{i:04d}" for i in range(p, backends, pools))
        members_m = ", ".join(f'"model-{i:03d}:7b"' for i in range(p, models, pools))
        docs.append(
            f"apiVersion: llmctl/v1\nkind: Pool\nmetadata: {{name: pool-{p:02d}}}\n"
            f"spec: {{purpose: bench, backends: [{members_b}], models: [{members_m}]}}\n"
        )
    return "---\n".join(docs)


async def _apply(url: str, text: str) -> tuple[float, int]:
    engine = database.create_async_engine(url)
    try:
        start = time.perf_counter()
        parsed = manifest.parse(text)
        async with database.session_factory(engine)() as session, session.begin():
            changes = await manifest.apply(session, parsed)
        return time.perf_counter() - start, sum(c.action != "unchanged" for c in changes)
    finally:
        await engine.dispose()


async def _export(url: str) -> float:
    engine = database.create_async_engine(url)
    try:
        start = time.perf_counter()
        async with database.session_factory(engine)() as session:
            manifest.export(await store.load(session))
        return time.perf_counter() - start
    finally:
        await engine.dispose()


def measure(url: str, text: str) -> dict[str, float | int]:
    migrations.upgrade(url)
    first, written = asyncio.run(_apply(url, text))
    again, rewritten = asyncio.run(_apply(url, text))
    exported = asyncio.run(_export(url))
    return {
        "apply_s": round(first, 3),
        "objects_written": written,
        "reapply_s": round(again, 3),
        "objects_rewritten": rewritten,
        "export_s": round(exported, 3),
    }


@contextlib.contextmanager
def postgres_url() -> Iterator[str]:
    given = os.environ.get("LLMCTL_BENCH_DATABASE_URL")
    if given:
        yield given
        return
    from tests import services

    server = services.PostgresServer.launch()
    try:
        with services.scratch_database(server) as url:
            yield url
    finally:
        server.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--backends", type=int, default=1000)
    parser.add_argument("--models", type=int, default=200)
    parser.add_argument("--pools", type=int, default=20)
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    args = parser.parse_args()
    text = fleet(args.backends, args.models, args.pools)
    results: dict[str, object] = {
        "backends": args.backends,
        "models": args.models,
        "pools": args.pools,
    }
    with tempfile.TemporaryDirectory() as tmp:
        results["sqlite"] = measure(f"sqlite:///{tmp}/bench.db", text)
    with postgres_url() as url:
        results["postgres"] = measure(url, text)
    if args.json:
        print(json.dumps(results))
        return
    print(f"declare: {args.backends} backends, {args.models} models, {args.pools} pools")
    for db in ("sqlite", "postgres"):
        r = results[db]
        assert isinstance(r, dict)
        print(
            f"  {db:<8} apply {r['apply_s']:.2f} s ({r['objects_written']} objects), "
            f"re-apply {r['reapply_s']:.2f} s ({r['objects_rewritten']} changed), "
            f"export {r['export_s']:.2f} s"
        )


if __name__ == "__main__":
    main()
