"""``GET /metrics``: the process's metrics in Prometheus text format.

Served without a key when ``metrics_enabled`` (the default): it holds
counts, sizes and latencies only, no project, agent, key or message (see
docs/operations.md). Off (``BEADHUB_METRICS=0``) it answers 404.
"""

from __future__ import annotations

from starlette.responses import Response

from hub import metrics
from hub.transport.http.registry import HttpCall, api
from protocol.errors import not_found


@api.get(
    "/metrics",
    summary="Prometheus metrics of this instance",
    tag="health",
    auth=False,
    # Like /health: a scraper is never refused for scraping.
    rate=None,
    media_type="text/plain",
    errors={404: "metrics are turned off (BEADHUB_METRICS=0)"},
)
async def prometheus_metrics(call: HttpCall) -> Response:
    if not call.hub.settings.metrics_enabled:
        raise not_found("metrics are turned off on this hub (BEADHUB_METRICS=0)")
    return Response(metrics.render(), media_type=metrics.CONTENT_TYPE_LATEST)
