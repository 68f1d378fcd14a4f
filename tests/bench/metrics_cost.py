"""What the metrics and the logs' call context add per call, per delivered
event and per statement, in CPU time (docs/benchmarks.md, "Metrics and logs
on the hot paths"):

    .venv/bin/python -m tests.bench.metrics_cost

Not a scenario of ``python -m tests.bench``: no hub runs; these are the
operations hub.transport.ws, hub.store.pool and the relay add, timed alone
with ``time.process_time`` (other processes' load does not count), best of 7.
"""

from __future__ import annotations

import logging
import time
import timeit
from collections.abc import Callable

from prometheus_client import CollectorRegistry, Counter, Histogram

from hub import logs, metrics

N = 200_000

_call_timer = metrics.METHOD_SECONDS.child("bench.call", "ws")
_statement_timer = metrics.DB_SECONDS.child("bench_statement")
_calls_log = logging.getLogger("beadhub.ws.calls")


def per_call() -> None:
    started = time.perf_counter()
    logs.CALL.set(logs.CallContext("project", "alice", "mail.send", started))
    _call_timer.observe(time.perf_counter() - started)
    if _calls_log.isEnabledFor(logging.DEBUG):
        pass


def per_event() -> None:
    metrics.EVENTS_DELIVERED.value += 1


def per_statement() -> None:
    started = time.perf_counter()
    _statement_timer.observe(time.perf_counter() - started)


def _empty() -> None:
    pass


def cost_ns(function: Callable[[], object]) -> float:
    best = min(timeit.repeat(function, number=N, repeat=7, timer=time.process_time))
    return best / N * 1e9


def main() -> None:
    base = cost_ns(_empty)
    registry = CollectorRegistry()
    histogram = Histogram("h", "h", ["m"], registry=registry, buckets=metrics.LATENCY_BUCKETS)
    child = histogram.labels("m")
    counter = Counter("c", "c", registry=registry)
    rows = {
        "per WebSocket call": per_call,
        "per delivered event": per_event,
        "per store statement": per_statement,
        "prometheus-client Histogram.observe": lambda: child.observe(0.003),
        "prometheus-client Counter.inc": counter.inc,
        "hub.metrics FastHistogram.observe": lambda: _call_timer.observe(0.003),
    }
    for name, function in rows.items():
        print(f"{name:40s} {cost_ns(function) - base:8.0f} ns CPU")


if __name__ == "__main__":
    main()
