"""Closed-loop load: N workers, each doing one call after another for a
fixed time, as N agents would. Throughput is what completes per second;
every call's latency is kept."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field

from tests.bench.harness import Meter, Metrics, percentiles

Op = Callable[[int], Awaitable[None]]


@dataclass
class LoopResult:
    count: int
    seconds: float
    latencies: list[float] = field(default_factory=list)
    usage: Metrics = field(default_factory=dict)

    @property
    def rate(self) -> float:
        return self.count / self.seconds if self.seconds else 0.0

    def metrics(self, prefix: str = "") -> Metrics:
        figures = {f"{prefix}rate": self.rate, **percentiles(self.latencies, prefix)}
        for key in ("hub_cpu_pct", "pg_cpu_pct", "gen_cpu_pct", "others_cpu_pct", "hub_rss_mb"):
            if key in self.usage:
                figures[f"{prefix}{key}"] = self.usage[key]
        if self.count and self.usage:
            # CPU time per op: unlike the rate, barely moved by other
            # work on the machine, so it shows what a change saves.
            for who in ("hub", "pg", "gen"):
                spent = self.usage[f"{who}_cpu_pct"] / 100 * self.usage["wall_s"]
                figures[f"{prefix}{who}_us_per_op"] = 1e6 * spent / self.count
        return figures


async def closed_loop(
    ops: Sequence[Op], seconds: float, warmup: float = 1.0, meter: Meter | None = None
) -> LoopResult:
    """Run every op in its own loop for ``warmup + seconds``; count and
    time only the calls that start after the warm-up. Bounded in time: no
    call starts after the end."""
    loop_start = time.perf_counter()
    measure_from = loop_start + warmup
    end = measure_from + seconds
    latencies: list[float] = []
    last_done = measure_from

    async def worker(op: Op) -> None:
        nonlocal last_done
        i = 0
        while (started := time.perf_counter()) < end:
            await op(i)
            i += 1
            if started >= measure_from:
                done = time.perf_counter()
                latencies.append(done - started)
                last_done = max(last_done, done)

    async def metering() -> None:
        await asyncio.sleep(max(0.0, measure_from - time.perf_counter()))
        if meter is not None:
            meter.start()

    await asyncio.gather(metering(), *(worker(op) for op in ops))
    usage = meter.stop() if meter is not None else {}
    return LoopResult(len(latencies), last_done - measure_from, latencies, usage)
