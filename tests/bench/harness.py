"""The benchmark harness: targets, scenarios, hub processes, the generator
process, and what both sides measure.

A scenario's ``run`` executes in the parent process: it starts the hub(s)
with :func:`cluster` and hands the load to :meth:`Cluster.generate`, which
runs an async generator function in a fresh *spawned* process (so the load
never shares an interpreter or a GIL with anything else) and returns the
figures that function measured. The generator measures CPU and memory with
a :class:`Meter` around exactly the phase it times.
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib
import math
import multiprocessing
import os
import resource
import statistics
import time
import traceback
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import psutil

from protocol.client import HubClient
from tests.bench.profile import Profiler, summary
from tests.support import REDIS_URL, HubProcess, create_database, drop_database, unique

LOG_DIR = Path(os.environ.get("BEADHUB_BENCH_LOGS", "/tmp/beadhub-bench"))
Metrics = dict[str, float]

#: Set by ``--profile``: sample every hub with py-spy, files named after this.
PROFILE: dict[str, str] = {}
#: Set by ``--pg-socket DIR``: hubs reach PostgreSQL over its Unix socket.
PG_SOCKET: dict[str, str] = {}


# -- targets and scenarios ------------------------------------------------------


@dataclass(frozen=True)
class Target:
    """One figure with its goal: ``value <= limit`` (or ``>=`` when
    ``higher_is_better``)."""

    metric: str
    limit: float
    higher_is_better: bool = False
    #: The limit of a ``--quick`` run where it differs (smaller loads).
    quick_limit: float | None = None

    def limit_for(self, quick: bool) -> float:
        return self.quick_limit if quick and self.quick_limit is not None else self.limit

    def ok(self, value: float, quick: bool = False) -> bool:
        limit = self.limit_for(quick)
        if math.isnan(value):
            return False
        return value >= limit if self.higher_is_better else value <= limit

    def ratio(self, value: float, quick: bool = False) -> float | None:
        limit = self.limit_for(quick)
        return None if limit == 0 else value / limit

    def describe(self, value: float, quick: bool = False) -> str:
        """``p99 3.1 ms / 5 ms = 0.62 ✓``"""
        label, unit = metric_label(self.metric)
        limit = self.limit_for(quick)
        ratio = self.ratio(value, quick)
        sign = "≥" if self.higher_is_better else "≤"
        ratio_text = (
            f"= {fmt_ratio(ratio)}" if ratio is not None else f"(target {sign} {fmt(limit)})"
        )
        mark = "✓" if self.ok(value, quick) else "✗"
        return f"{label} {fmt(value)} {unit} / {fmt(limit)} {unit} {ratio_text} {mark}".replace(
            "  ", " "
        )

    def goal(self, quick: bool = False) -> str:
        label, unit = metric_label(self.metric)
        sign = "≥" if self.higher_is_better else "≤"
        return f"{label} {sign} {fmt(self.limit_for(quick))} {unit}".strip()


RunFn = Callable[["RunContext"], Awaitable[Metrics]]


@dataclass
class Scenario:
    name: str
    #: The issue's row, as a reader looks for it.
    row: str
    targets: tuple[Target, ...]
    run: RunFn
    #: What the hub must offer: ``"rpc:chat.send"`` or ``"http:POST /v1/messages"``.
    needs: tuple[str, ...] = ()
    note: str = ""

    def missing(self) -> list[str]:
        return [need for need in self.needs if not _available(need)]


SCENARIOS: dict[str, Scenario] = {}


def scenario(
    name: str, row: str, targets: Sequence[Target], needs: Sequence[str] = (), note: str = ""
) -> Callable[[RunFn], RunFn]:
    def register(run: RunFn) -> RunFn:
        SCENARIOS[name] = Scenario(name, row, tuple(targets), run, tuple(needs), note)
        return run

    return register


def _available(need: str) -> bool:
    kind, _, what = need.partition(":")
    if kind == "rpc":
        from protocol.methods import CATALOGUE

        return what in CATALOGUE
    if kind == "http":
        from starlette.routing import Route

        from hub.transport import http

        verb, _, path = what.partition(" ")
        return any(
            isinstance(r, Route) and r.path == path and verb in (r.methods or ())
            for r in http.routes
        )
    raise ValueError(f"unknown need {need!r}")


@dataclass
class RunContext:
    quick: bool
    index: int


# -- figures ------------------------------------------------------------------------

#: metric -> (label, unit) for printing; unknown metrics print as they are.
LABELS: dict[str, tuple[str, str]] = {
    "p50_ms": ("p50", "ms"),
    "p95_ms": ("p95", "ms"),
    "p99_ms": ("p99", "ms"),
    "max_ms": ("max", "ms"),
    "n": ("samples", ""),
    "rate": ("throughput", "/s"),
    "hub_cpu_pct": ("hub CPU", "% of a core"),
    "pg_cpu_pct": ("PostgreSQL CPU", "% of a core"),
    "gen_cpu_pct": ("generator CPU", "% of a core"),
    "hub_rss_mb": ("hub RSS", "MB"),
    "wall_s": ("measured for", "s"),
    "load1": ("machine load (1 min)", ""),
    "others_cpu_pct": ("other processes' CPU", "% of a core"),
}


def metric_label(metric: str) -> tuple[str, str]:
    if metric in LABELS:
        return LABELS[metric]
    suffixes = (
        ("_us_per_op", "µs CPU per op"),
        ("_ms", "ms"),
        ("_pct", "%"),
        ("_mb", "MB"),
        ("_s", "s"),
        ("_rps", "/s"),
    )
    for suffix, unit in suffixes:
        if metric.endswith(suffix):
            return metric[: -len(suffix)].replace("_", " "), unit
    return metric.replace("_", " "), ""


def fmt(value: float) -> str:
    if math.isnan(value):
        return "n/a"
    if value == int(value):
        return f"{int(value):,}"
    if abs(value) >= 100:
        return f"{value:,.0f}"
    if abs(value) >= 10:
        return f"{value:.1f}"
    if abs(value) >= 1:
        return f"{value:.2f}"
    return f"{value:.3f}"


def fmt_ratio(ratio: float) -> str:
    return f"{ratio:.2g}" if 0 < abs(ratio) < 0.1 else f"{ratio:.2f}"


def percentiles(samples_s: Iterable[float], prefix: str = "") -> Metrics:
    """p50/p95/p99/max in ms of latencies given in seconds (nearest rank)."""
    ordered = sorted(samples_s)
    if not ordered:
        return {f"{prefix}n": 0}

    def rank(q: float) -> float:
        return ordered[min(len(ordered) - 1, max(0, math.ceil(q * len(ordered)) - 1))] * 1000

    return {
        f"{prefix}p50_ms": rank(0.50),
        f"{prefix}p95_ms": rank(0.95),
        f"{prefix}p99_ms": rank(0.99),
        f"{prefix}max_ms": ordered[-1] * 1000,
        f"{prefix}n": float(len(ordered)),
    }


def medians(runs: list[Metrics]) -> Metrics:
    keys = {k for run in runs for k in run}
    return {k: statistics.median([r[k] for r in runs if k in r]) for k in sorted(keys)}


# -- measuring CPU and memory (generator side) -------------------------------------------


def _busy() -> float:
    """CPU seconds the whole machine has spent not idle."""
    times = psutil.cpu_times()
    return float(sum(times) - times.idle - getattr(times, "iowait", 0.0))


def _cpu(proc: psutil.Process) -> float:
    times = proc.cpu_times()
    return float(times.user + times.system)


class Meter:
    """CPU (as % of one core) and RSS of the hub processes, of the
    PostgreSQL processes serving this run's database (its backends plus the
    shared walwriter, which does the commits' WAL writes), and of this
    generator, over one measured phase."""

    def __init__(self, hub_pids: Sequence[int], database: str) -> None:
        self.hubs = [psutil.Process(pid) for pid in hub_pids]
        self.database = database
        self.me = psutil.Process()
        self._start = 0.0
        self._hub0: list[float] = []
        self._pg0: dict[int, float] = {}
        self._me0 = 0.0
        self._machine0 = 0.0

    def _postgres(self) -> dict[int, psutil.Process]:
        found = {}
        for proc in psutil.process_iter(["name", "cmdline"]):
            if proc.info["name"] != "postgres":
                continue
            title = " ".join(proc.info["cmdline"] or ())
            if f" {self.database} " in title or "walwriter" in title:
                found[proc.pid] = proc
        return found

    def start(self) -> Meter:
        self._start = time.monotonic()
        self._hub0 = [_cpu(p) for p in self.hubs]
        self._pg0 = {}
        for pid, proc in self._postgres().items():
            with contextlib.suppress(psutil.Error):
                self._pg0[pid] = _cpu(proc)
        self._me0 = _cpu(self.me)
        self._machine0 = _busy()
        return self

    def stop(self) -> Metrics:
        wall = time.monotonic() - self._start
        hub = sum(_cpu(p) - c0 for p, c0 in zip(self.hubs, self._hub0, strict=True))
        pg = 0.0
        for pid, proc in self._postgres().items():
            with contextlib.suppress(psutil.Error):
                pg += _cpu(proc) - self._pg0.get(pid, 0.0)
        me = _cpu(self.me) - self._me0
        machine = _busy() - self._machine0
        return {
            "hub_cpu_pct": 100 * hub / wall,
            "pg_cpu_pct": 100 * pg / wall,
            "gen_cpu_pct": 100 * me / wall,
            # Everything else on the machine (other work competing for the
            # same cores): a high figure means the run was disturbed.
            "others_cpu_pct": max(0.0, 100 * (machine - hub - pg - me) / wall),
            "hub_rss_mb": self.hub_rss_mb(),
            "wall_s": wall,
            "load1": os.getloadavg()[0],
        }

    def hub_rss_mb(self) -> float:
        return max(p.memory_info().rss for p in self.hubs) / 2**20


# -- the hub side (parent) --------------------------------------------------------------


@dataclass
class HubSpec:
    http: str
    ws: str
    pid: int


@dataclass
class Cluster:
    dsn: str
    hubs: list[HubProcess]
    quick: bool
    generators: int = 0
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def database(self) -> str:
        return self.dsn.rsplit("/", 1)[1]

    def spec(self, **params: Any) -> dict[str, Any]:
        assert all(h.proc is not None for h in self.hubs)
        return {
            "hubs": [
                {"http": h.http_url, "ws": h.ws_url, "pid": h.proc.pid}  # type: ignore[union-attr]
                for h in self.hubs
            ],
            "database": self.database,
            "quick": self.quick,
            **params,
        }

    async def generate(self, target: str, timeout: float = 300, **params: Any) -> Metrics:
        """Run ``module:function(spec)`` in a spawned process and return its figures."""
        return await run_generator(target, self.spec(**params), timeout)


def raise_fd_limit() -> int:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard == resource.RLIM_INFINITY:
        hard = 1 << 20
    if soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    return hard


@contextlib.asynccontextmanager
async def cluster(
    quick: bool, instances: int = 1, redis: bool = False, env: dict[str, str] | None = None
) -> AsyncIterator[Cluster]:
    """A throwaway database and ``instances`` hub processes on it (sharing
    a fresh Redis key prefix when ``redis``); all removed afterwards."""
    os.makedirs(LOG_DIR, exist_ok=True)
    dsn = await create_database()
    prefix = unique("beadhub-bench")
    hubs: list[HubProcess] = []
    profilers: list[Profiler] = []
    try:
        for i in range(instances):
            hub_dsn = dsn
            if PG_SOCKET:
                base, _, name = dsn.rpartition("/")
                user = base.split("//", 1)[1].split("@", 1)[0]
                hub_dsn = f"postgresql://{user}@/{name}?host={PG_SOCKET['dir']}"
            hub_env = {
                "DATABASE_URL": hub_dsn,
                "BEADHUB_LOG_LEVEL": "warning",
                "BEADHUB_INSTANCE_ID": f"bench{i}-{prefix[-8:]}",
                "REDIS_URL": REDIS_URL if redis else "",
                "BEADHUB_BUS_URL": REDIS_URL if redis else "memory://",
                "BEADHUB_BUS_PREFIX": prefix,
                **(env or {}),
            }
            hub = HubProcess(env=hub_env)
            hub.log_path = LOG_DIR / f"hub-{hub.port}.log"
            await asyncio.to_thread(hub.start)
            hubs.append(hub)
            if PROFILE:
                assert hub.proc is not None
                out = LOG_DIR / f"profile-{PROFILE['name']}-{i}-{hub.port}.txt"
                profiler = Profiler(hub.proc.pid, out)
                profiler.start()
                profilers.append(profiler)
        yield Cluster(dsn, hubs, quick)
    finally:
        for profiler in profilers:
            await asyncio.to_thread(profiler.stop)
            print(f"   profile of hub {profiler.pid}:\n{summary(profiler.out)}", flush=True)
        for hub in hubs:
            await asyncio.to_thread(hub.stop)
        with contextlib.suppress(Exception):
            await drop_database(dsn)
        if redis:
            await _drop_redis_prefix(prefix)


async def _drop_redis_prefix(prefix: str) -> None:
    import redis.asyncio as aioredis

    client = aioredis.from_url(REDIS_URL)
    try:
        keys = [key async for key in client.scan_iter(match=f"{prefix}:*", count=1000)]
        for i in range(0, len(keys), 500):
            await client.delete(*keys[i : i + 500])
    finally:
        await client.aclose()


# -- the generator process ---------------------------------------------------------------


def _generator_main(target: str, spec: dict[str, Any], conn: Any) -> None:
    raise_fd_limit()
    module_name, _, name = target.partition(":")
    try:
        function = getattr(importlib.import_module(module_name), name)
        try:
            import uvloop

            uvloop.install()
        except ImportError:
            pass
        result = asyncio.run(function(spec))
        conn.send(("ok", result))
    except BaseException:
        conn.send(("error", traceback.format_exc()))
    finally:
        conn.close()


async def run_generator(target: str, spec: dict[str, Any], timeout: float) -> Metrics:
    context = multiprocessing.get_context("spawn")
    receiver, sender = context.Pipe(duplex=False)
    process = context.Process(
        target=_generator_main, args=(target, spec, sender), name="bench-generator", daemon=True
    )
    process.start()
    sender.close()
    try:
        ready = await asyncio.to_thread(receiver.poll, timeout)
        if not ready:
            raise TimeoutError(f"generator {target} did not finish within {timeout:.0f} s")
        status, payload = receiver.recv()
    except EOFError:
        raise RuntimeError(f"generator {target} died (exit {process.exitcode})") from None
    finally:
        await asyncio.to_thread(process.join, 10)
        if process.is_alive():
            process.kill()
            await asyncio.to_thread(process.join, 5)
    if status != "ok":
        raise RuntimeError(f"generator {target} failed:\n{payload}")
    return payload  # type: ignore[no-any-return]


# -- generator-side helpers ----------------------------------------------------------------


def hub_pids(spec: dict[str, Any]) -> list[int]:
    return [h["pid"] for h in spec["hubs"]]


def meter(spec: dict[str, Any]) -> Meter:
    return Meter(hub_pids(spec), spec["database"])


async def onboard_team(
    http: httpx.AsyncClient, slug: str, size: int, concurrency: int = 16
) -> list[dict[str, Any]]:
    """``size`` agents in project ``slug``; the first one creates the project."""

    async def one(i: int) -> dict[str, Any]:
        body = {
            "project_slug": slug,
            "alias": f"agent{i:05d}",
            "role": "developer",
            "hostname": "bench-host",
            "workspace_path": f"/bench/{slug}/{i}",
            "repo_origin": "git@github.com:acme/bench.git",
        }
        for attempt in range(3):
            try:
                response = await http.post("/v1/init", json=body)
                break
            except httpx.TransportError:
                # A pooled keep-alive connection the hub closed as idle (its
                # 5 s keep-alive timeout) just as it was reused. Sending it
                # again is safe: init from the same workspace is idempotent.
                if attempt == 2:
                    raise
        response.raise_for_status()
        return response.json()  # type: ignore[no-any-return]

    first = await one(0)
    gate = asyncio.Semaphore(concurrency)

    async def gated(i: int) -> dict[str, Any]:
        async with gate:
            return await one(i)

    rest = await asyncio.gather(*(gated(i) for i in range(1, size)))
    return [first, *rest]


async def onboard_teams(
    http_url: str, teams: int, size: int, concurrency: int = 32
) -> list[list[dict[str, Any]]]:
    """``teams`` projects of ``size`` agents each, onboarded over HTTP."""
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    async with httpx.AsyncClient(base_url=http_url, timeout=60, limits=limits) as http:
        gate = asyncio.Semaphore(max(1, concurrency // max(1, min(size, 16))))

        async def team(t: int) -> list[dict[str, Any]]:
            async with gate:
                return await onboard_team(http, unique(f"bench{t}"), size, min(size, 16))

        return list(await asyncio.gather(*(team(t) for t in range(teams))))


async def connect_all(
    ws_url: str,
    agents: Sequence[dict[str, Any]],
    batch: int = 200,
    events: list[str] | None = None,
) -> list[HubClient]:
    """One session per agent, opened ``batch`` at a time; no auto-reconnect,
    so a dropped session shows up as missing rather than being hidden.
    ``events``: the sessions' subscription (None: every event)."""
    clients: list[HubClient] = []
    for i in range(0, len(agents), batch):
        chunk = [
            HubClient(ws_url, a["api_key"], reconnect=False, events=events)
            for a in agents[i : i + batch]
        ]
        await asyncio.gather(*(c.connect() for c in chunk))
        clients.extend(chunk)
    return clients


async def close_all(clients: Sequence[HubClient], batch: int = 500) -> None:
    for i in range(0, len(clients), batch):
        await asyncio.gather(*(c.close() for c in clients[i : i + batch]), return_exceptions=True)


def drain(client: HubClient) -> None:
    client.pending_events()
