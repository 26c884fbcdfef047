"""Scale-out benchmark: one vs two `carebot run` processes on one PostgreSQL database.

Each phase starts N real `carebot run` processes (webhook intake on, sandbox off) on a fresh
database and drives signed ``POST /ingest`` requests at them, spread evenly, from this
process (an aiohttp client with --concurrency requests in flight). A 202 means the mention
is stored, classified and ticketed (the webhook answers after the group commit), so
throughput = mentions / (last 202 - first request). The processes, PostgreSQL and this load
generator share the machine's cores: the ratio says what a second process adds on it.

Polled sources (X, Mastodon, Telegram) are held by one process at a time (leases), so a
second process adds throughput only for intake that can be spread, like webhooks.

Usage: python bench/scale.py [--mentions N] [--concurrency C] [--quick] [--database-url URL]
Ends with one line of key=value figures.
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import hmac
import json
import os
import platform
import random
import shutil
import signal
import socket
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

import aiohttp
import yaml
from sqlalchemy import func, select

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from bench.pipeline import fresh_db  # noqa: E402
from bot.models import mentions  # noqa: E402
from bot.platforms.webhook import SIGNATURE_HEADER, TIMESTAMP_HEADER  # noqa: E402
from bot.sandbox.traffic import TrafficGenerator  # noqa: E402
from bot.store import make_engine  # noqa: E402

SECRET = "bench-webhook-secret-0123456789"
DEFAULT_PG = "postgresql+asyncpg://postgres@127.0.0.1:5432/test"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def make_config(tmp: Path) -> Path:
    target = tmp / "config"
    shutil.copytree(REPO / "config", target, dirs_exist_ok=True)
    path = target / "carebot.yaml"
    data = yaml.safe_load(path.read_text())
    data["sandbox"]["enabled"] = False
    data["platforms"]["webhook"]["enabled"] = True
    data["staff"]["enabled"] = False
    data["logging"]["level"] = "WARNING"
    path.write_text(yaml.safe_dump(data))
    return target


async def spawn(config: Path, db_url: str, port: int, log: Path) -> asyncio.subprocess.Process:
    env = {k: v for k, v in os.environ.items() if not k.startswith("CAREBOT_")}
    env.update(
        PYTHONPATH=str(REPO),
        CAREBOT_CONFIG_DIR=str(config),
        CAREBOT_DATABASE_URL=db_url,
        CAREBOT_WEBHOOK_SECRET=SECRET,
        CAREBOT_HTTP_PORT=str(port),
    )
    with log.open("w") as out:
        return await asyncio.create_subprocess_exec(
            sys.executable, "-m", "bot", "run", env=env, stdout=out, stderr=out
        )


async def wait_listening(port: int, proc: asyncio.subprocess.Process, log: Path) -> None:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if proc.returncode is not None:
            text = await asyncio.to_thread(log.read_text)
            raise SystemExit(f"carebot exited with {proc.returncode}:\n{text}")
        try:
            _, writer = await asyncio.open_connection("127.0.0.1", port)
        except OSError:
            await asyncio.sleep(0.1)
            continue
        writer.close()
        await writer.wait_closed()
        return
    text = await asyncio.to_thread(log.read_text)
    raise SystemExit(f"carebot did not listen on {port} within 60 s:\n{text}")


def cpu_seconds(pids: list[int]) -> float:
    """User + system CPU time of these processes so far (Linux /proc)."""
    tick = os.sysconf("SC_CLK_TCK")
    total = 0.0
    for pid in pids:
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        total += (int(fields[11]) + int(fields[12])) / tick
    return total


def postgres_pids() -> list[int]:
    pids = []
    for comm in Path("/proc").glob("[0-9]*/comm"):
        try:
            if comm.read_text().strip().startswith("postgres"):
                pids.append(int(comm.parent.name))
        except OSError:
            continue
    return pids


def bodies(n: int, run: int) -> list[bytes]:
    gen = TrafficGenerator(rng=random.Random(run))
    now = datetime.now(UTC).isoformat()
    out = []
    for i, sample in enumerate(gen.samples(n)):
        out.append(
            json.dumps(
                {
                    "source": "bench",
                    "external_id": f"r{run}-{i}",
                    "text": sample.text,
                    "author": {"id": f"a{i % 5000}", "handle": f"cust{i % 5000}"},
                    "created_at": now,
                }
            ).encode()
        )
    return out


def signed(body: bytes) -> dict[str, str]:
    ts = str(int(time.time()))
    mac = hmac.new(SECRET.encode(), f"{ts}.".encode() + body, hashlib.sha256).hexdigest()
    return {
        TIMESTAMP_HEADER: ts,
        SIGNATURE_HEADER: f"sha256={mac}",
        "Content-Type": "application/json",
    }


async def drive(ports: list[int], payloads: list[bytes], concurrency: int) -> tuple[float, int]:
    """Send every payload (spread over the ports); return (seconds, refused count)."""
    queue: asyncio.Queue[tuple[int, bytes]] = asyncio.Queue()
    for i, body in enumerate(payloads):
        queue.put_nowait((ports[i % len(ports)], body))
    refused = 0
    connector = aiohttp.TCPConnector(limit=concurrency)
    timeout = aiohttp.ClientTimeout(total=120)
    async with aiohttp.ClientSession(connector=connector, timeout=timeout) as session:

        async def worker() -> None:
            nonlocal refused
            while not queue.empty():
                port, body = queue.get_nowait()
                url = f"http://127.0.0.1:{port}/ingest"
                async with session.post(url, data=body, headers=signed(body)) as resp:
                    await resp.read()
                    if resp.status != 202:
                        refused += 1

        t0 = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(concurrency)))
        return time.perf_counter() - t0, refused


async def phase(
    processes: int, n: int, concurrency: int, base: str, tmp: Path
) -> dict[str, float]:
    db_url = await fresh_db(base, tmp, f"scale{processes}")
    config = make_config(tmp / f"p{processes}")
    ports = [free_port() for _ in range(processes)]
    logs = [tmp / f"p{processes}-{i}.log" for i in range(processes)]
    procs = []
    for port, log in zip(ports, logs, strict=True):
        procs.append(await spawn(config, db_url, port, log))
        await wait_listening(port, procs[-1], log)  # one at a time: the first migrates
    try:
        await drive(ports, bodies(200, -processes), concurrency)  # warm up
        payloads = bodies(n, processes)
        pg = postgres_pids()
        before = (cpu_seconds([os.getpid()]), cpu_seconds([p.pid for p in procs]), cpu_seconds(pg))
        span, refused = await drive(ports, payloads, concurrency)
        after = (cpu_seconds([os.getpid()]), cpu_seconds([p.pid for p in procs]), cpu_seconds(pg))
        gen_cpu, carebot_cpu, pg_cpu = (b - a for a, b in zip(before, after, strict=True))
    finally:
        for p in procs:
            if p.returncode is None:
                p.send_signal(signal.SIGTERM)
        codes = [await asyncio.wait_for(p.wait(), 60) for p in procs]
    engine = make_engine(db_url)
    async with engine.connect() as conn:
        stored = (await conn.execute(select(func.count()).select_from(mentions))).scalar_one()
    await engine.dispose()
    return {
        "processes": processes,
        "mentions": n,
        "span_s": span,
        "per_s": n / span,
        "refused": refused,
        "stored": stored - 200,
        "exit_codes_ok": all(c == 0 for c in codes),
        "cpu": {"generator": gen_cpu, "carebot": carebot_cpu, "postgres": pg_cpu},
    }


async def main() -> None:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--mentions", type=int, default=20000)
    ap.add_argument("--concurrency", type=int, default=64)
    ap.add_argument("--quick", action="store_true", help="a run under one minute")
    ap.add_argument(
        "--database-url",
        default=os.environ.get("CAREBOT_TEST_DATABASE_URL", DEFAULT_PG),
        help="PostgreSQL URL of a server to create bench databases on",
    )
    args = ap.parse_args()
    if args.quick:
        args.mentions = min(args.mentions, 3000)
    print(
        f"machine: {platform.machine()} {os.cpu_count()} cores, Python "
        f"{platform.python_version()}; load generator in this process, "
        f"{args.concurrency} requests in flight"
    )
    results = []
    with tempfile.TemporaryDirectory() as d:
        for processes in (1, 2):
            r = await phase(processes, args.mentions, args.concurrency, args.database_url, Path(d))
            results.append(r)
            print(
                f"{processes} process(es): {r['mentions']} webhook mentions stored, classified "
                f"and ticketed in {r['span_s']:.2f} s → {r['per_s']:.0f}/s "
                f"({r['stored']} stored, {r['refused']} refused, clean exit: "
                f"{r['exit_codes_ok']})"
            )
            cores = (os.cpu_count() or 1) * r["span_s"]
            print(
                "  CPU used meanwhile, of "
                f"{cores:.1f} core-seconds: "
                + ", ".join(f"{k} {v:.1f} s" for k, v in r["cpu"].items())  # type: ignore[attr-defined]
                + f", idle {cores - sum(r['cpu'].values()):.1f} s"  # type: ignore[attr-defined]
            )
    one, two = results
    ratio = two["per_s"] / one["per_s"]
    print(f"two processes / one: {ratio:.2f} times")
    lost = sum(r["mentions"] - r["stored"] for r in results)
    print(
        f"one_per_s={one['per_s']:.0f} two_per_s={two['per_s']:.0f} ratio={ratio:.2f} "
        f"lost={lost} refused={one['refused'] + two['refused']}"
    )


if __name__ == "__main__":
    asyncio.run(main())
