"""What ``GET /metrics`` shows: this process's metrics in Prometheus format.

Two kinds of metric live here:

- **Hot-path figures** (method calls and their latency, events delivered to
  sessions, statement latency) are plain Python numbers that a call bumps
  without a lock or a label lookup: :class:`Tally` counters and
  :class:`FastHistogram` histograms, whose labelled children are bound once
  (``METHOD_SECONDS.child("mail.send")``) and kept by the caller.
  prometheus-client's own ``Counter.inc`` takes a lock (about 1 µs here)
  and ``Histogram.observe`` two (2 µs), per frame and per call; the hub
  runs in one event loop thread, so nothing needs the locks.
  prometheus-client still renders them (:class:`_HubCollector`).
- **Everything else** uses prometheus-client's classes directly:
  counters off the hot path (:data:`RATE_LIMITED`, :data:`BUS_GAPS`, ...)
  and gauges read at scrape time from the live hubs of this process
  (sessions, pool use, queue depths), labelled by ``hub`` (the instance
  id; Prometheus adds the scrape target as ``instance``).

Other modules count with these objects; none of them imports
prometheus-client. Rate limiters call :func:`rate_limited` (or keep
``RATE_LIMITED.labels(limit=...)`` bound).
"""

from __future__ import annotations

import bisect
import time
from collections.abc import Iterator, Sequence
from typing import TYPE_CHECKING, Any

from prometheus_client import CollectorRegistry, Counter, disable_created_metrics
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.exposition import CONTENT_TYPE_LATEST, generate_latest
from prometheus_client.registry import Collector

if TYPE_CHECKING:
    from hub.services.context import Hub

__all__ = ["CONTENT_TYPE_LATEST", "REGISTRY", "render"]

# A ``_created`` timestamp per counter doubles the page for nothing a
# dashboard uses.
disable_created_metrics()

#: The hub's own registry: nothing of prometheus-client's default
#: (process and platform collectors of whatever else shares the process).
REGISTRY = CollectorRegistry(auto_describe=True)

#: Seconds: from sub-millisecond calls to the longest chat wait (600 s).
LATENCY_BUCKETS: tuple[float, ...] = (
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5,
    1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0, 600.0,
)  # fmt: skip


class Tally:
    """A counter without labels: ``tally.value += 1``."""

    __slots__ = ("doc", "name", "value")

    def __init__(self, name: str, doc: str) -> None:
        self.name = name
        self.doc = doc
        self.value = 0


class HistogramChild:
    """One label set's buckets: ``child.observe(seconds)``."""

    __slots__ = ("_bounds", "buckets", "count", "sum")

    def __init__(self, bounds: tuple[float, ...]) -> None:
        self._bounds = bounds
        #: Observations per bucket (not cumulative); the last is +Inf.
        self.buckets = [0] * (len(bounds) + 1)
        self.count = 0
        self.sum = 0.0

    def observe(self, value: float) -> None:
        self.buckets[bisect.bisect_left(self._bounds, value)] += 1
        self.count += 1
        self.sum += value


class FastHistogram:
    """A histogram with labels whose children the caller binds once."""

    def __init__(
        self,
        name: str,
        doc: str,
        labels: Sequence[str],
        buckets: tuple[float, ...] = LATENCY_BUCKETS,
    ) -> None:
        self.name = name
        self.doc = doc
        self.labels = tuple(labels)
        self.bounds = buckets
        self.children: dict[tuple[str, ...], HistogramChild] = {}

    def child(self, *values: str) -> HistogramChild:
        found = self.children.get(values)
        if found is None:
            assert len(values) == len(self.labels), (self.name, values)
            found = self.children[values] = HistogramChild(self.bounds)
        return found

    def family(self) -> HistogramMetricFamily:
        family = HistogramMetricFamily(self.name, self.doc, labels=self.labels)
        for values, child in list(self.children.items()):
            if not child.count:
                continue  # bound in advance, never used: no series yet
            cumulative, buckets = 0, []
            for bound, count in zip((*self.bounds, float("inf")), child.buckets, strict=True):
                cumulative += count
                buckets.append((_bound(bound), cumulative))
            family.add_metric(list(values), buckets, child.sum)
        return family


def _bound(value: float) -> str:
    return "+Inf" if value == float("inf") else repr(value)


# -- hot path -----------------------------------------------------------------

#: JSON-RPC calls (WebSocket) and HTTP shim routes, by method and transport.
METHOD_SECONDS = FastHistogram(
    "beadhub_method_seconds",
    "Time to answer a call, by method (JSON-RPC name or HTTP route) and transport.",
    ["method", "transport"],
)
#: Statements through the store's helpers, and group-commit batches.
DB_SECONDS = FastHistogram(
    "beadhub_db_statement_seconds",
    "PostgreSQL statement latency: store statements and group-commit batches.",
    ["kind"],
)
#: How long an event took from its insert to its arrival from the bus on
#: another instance (Redis bus only).
BUS_LAG = FastHistogram(
    "beadhub_bus_lag_seconds",
    "Age of events arriving from other instances over the bus (insert to receipt).",
    [],
)
EVENTS_DELIVERED = Tally(
    "beadhub_events_delivered", "Event frames handed to agent and dashboard sessions."
)
EVENTS_PUBLISHED = Tally("beadhub_events_published", "Committed events announced on the relay.")
SESSIONS_OPENED = Tally("beadhub_sessions_opened", "WebSocket sessions opened.")
TALLIES = (EVENTS_DELIVERED, EVENTS_PUBLISHED, SESSIONS_OPENED)
HISTOGRAMS = (METHOD_SECONDS, DB_SECONDS, BUS_LAG)

# -- off the hot path ---------------------------------------------------------

RATE_LIMITED = Counter(
    "beadhub_rate_limited",
    "Requests refused by a limit, by limit (in_flight, key, address, ...).",
    ["limit"],
    registry=REGISTRY,
)
METHOD_ERRORS = Counter(
    "beadhub_method_errors",
    "Calls answered with an error, by method, transport and JSON-RPC error code.",
    ["method", "transport", "code"],
    registry=REGISTRY,
)
BUS_GAPS = Counter(
    "beadhub_bus_gaps",
    "Times the bus reported it may have lost a channel's messages (sessions re-read the store).",
    registry=REGISTRY,
)
SESSIONS_DROPPED = Counter(
    "beadhub_sessions_dropped_slow",
    "Sessions closed with 1013 because they fell too far behind.",
    registry=REGISTRY,
)
EVENTS_PRUNED = Counter(
    "beadhub_events_pruned",
    "Events deleted by retention.",
    registry=REGISTRY,
)
RESYNCS = Counter(
    "beadhub_resyncs",
    "Resumes refused because their cursor is older than the retention window.",
    registry=REGISTRY,
)


def rate_limited(limit: str) -> None:
    """Count one refusal by the limit named ``limit``."""
    RATE_LIMITED.labels(limit=limit).inc()


# -- live state, read at scrape time --------------------------------------------

#: The hubs running in this process (one, except in the tests), by id().
_hubs: dict[int, Hub] = {}


def watch(hub: Hub) -> None:
    """Show this hub's live state until :func:`unwatch`."""
    _hubs[id(hub)] = hub


def unwatch(hub: Hub) -> None:
    _hubs.pop(id(hub), None)


def _hub_gauges() -> Iterator[Metric]:
    def gauge(name: str, doc: str) -> GaugeMetricFamily:
        # "hub", not "instance": Prometheus puts the scrape target there.
        return GaugeMetricFamily(name, doc, labels=["hub"])

    sessions = gauge("beadhub_sessions", "Open WebSocket sessions.")
    agents = gauge("beadhub_sessions_agents", "Agents with at least one open session here.")
    send_queue = gauge(
        "beadhub_session_send_queue_frames", "Frames waiting in session send queues (sum)."
    )
    send_queue_max = gauge(
        "beadhub_session_send_queue_frames_max", "Frames waiting in the fullest session queue."
    )
    pool_size = gauge("beadhub_db_pool_connections", "Connections in the pool.")
    pool_idle = gauge("beadhub_db_pool_idle", "Idle connections in the pool.")
    pool_max = gauge("beadhub_db_pool_max", "The pool's largest size.")
    group_queue = gauge(
        "beadhub_group_commit_queued", "Calls waiting for a group-commit batch (all groups)."
    )
    unsent = gauge(
        "beadhub_bus_unsent", "Messages waiting to be re-published while the bus is unreachable."
    )
    listeners = gauge("beadhub_relay_channels", "Bus channels with listeners here.")
    for hub in list(_hubs.values()):
        instance = [hub.settings.instance_id]
        open_sessions = list(hub.sessions)
        sessions.add_metric(instance, len(open_sessions))
        agents.add_metric(
            instance, len({s.actor.agent_id for s in open_sessions if s.actor.agent_id})
        )
        depths = [s.queued for s in open_sessions]
        send_queue.add_metric(instance, sum(depths))
        send_queue_max.add_metric(instance, max(depths, default=0))
        stats = hub.store.stats()
        pool_size.add_metric(instance, stats["size"])
        pool_idle.add_metric(instance, stats["idle"])
        pool_max.add_metric(instance, stats["max"])
        group_queue.add_metric(instance, stats["group_commit_queued"])
        unsent.add_metric(instance, hub.relay.unsent)
        listeners.add_metric(instance, hub.relay.channels)
    yield from (sessions, agents, send_queue, send_queue_max, pool_size, pool_idle, pool_max)
    yield from (group_queue, unsent, listeners)


class _HubCollector(Collector):
    def collect(self) -> Iterator[Metric]:
        for tally in TALLIES:
            yield CounterMetricFamily(tally.name, tally.doc, value=tally.value)
        for histogram in HISTOGRAMS:
            yield histogram.family()
        yield from _hub_gauges()
        yield GaugeMetricFamily(
            "beadhub_scrape_timestamp_seconds", "When this page was made.", value=time.time()
        )


REGISTRY.register(_HubCollector())


def render() -> bytes:
    """The Prometheus text exposition of everything above."""
    return generate_latest(REGISTRY)


def sample(name: str, **labels: str) -> Any:
    """The current value of one sample (tests)."""
    return REGISTRY.get_sample_value(name, labels)
