"""schemathesis over ``/openapi.json``: requests generated from the
document reach a real ``beadhub serve``, and every answer must be one the
document describes (status code, content type, response schema) and never
a server error. Seeded (derandomized); ``BEADHUB_FUZZ_EXAMPLES`` examples
per operation (``make fuzz`` runs more)."""

from __future__ import annotations

import os
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from schemathesis import checks

from tests.support import HubProcess, unique

EXAMPLES = int(os.environ.get("BEADHUB_FUZZ_EXAMPLES", "3"))

pytestmark = pytest.mark.timeout(600)

#: The answer is the documented one, and never a server error. (Not
#: schemathesis' positive/negative data checks: the hub rightly refuses
#: schema-valid requests for what a schema cannot say, such as an alias
#: that does not exist, and a NUL or a number past 64 bits anywhere.)
CHECKS = [
    checks.not_a_server_error,
    checks.status_code_conformance,
    checks.content_type_conformance,
    checks.response_headers_conformance,
    checks.response_schema_conformance,
]


@pytest.fixture(scope="module")
def hub_process(database_url: str) -> Iterator[HubProcess]:
    hub = HubProcess(
        env={
            "DATABASE_URL": database_url,
            "BEADHUB_BUS_URL": "memory://",
            "BEADHUB_LOG_LEVEL": "warning",
        }
    ).start()
    try:
        yield hub
    finally:
        hub.stop()


@pytest.fixture(scope="module")
def api_key(hub_process: HubProcess) -> str:
    answer = httpx.post(
        hub_process.http_url + "/v1/init",
        json={"project_slug": unique("schema"), "alias": "alice", "repo_origin": "git@x:a/b.git"},
        timeout=10,
    )
    answer.raise_for_status()
    return str(answer.json()["api_key"])


@pytest.fixture(scope="module")
def api_schema(hub_process: HubProcess) -> Any:
    return schemathesis.openapi.from_url(hub_process.http_url + "/openapi.json")


def _check_operation(operation: Any, api_key: str) -> None:
    @given(case=operation.as_strategy())
    @settings(
        max_examples=EXAMPLES,
        derandomize=True,
        deadline=None,
        database=None,
        suppress_health_check=list(HealthCheck),
    )
    def check(case: Any) -> None:
        if case.path == "/v1/chat/sessions/{session_id}/stream":
            case.query = {**(case.query or {}), "deadline": "2000-01-01T00:00:00Z"}
        case.call_and_validate(
            headers={"Authorization": f"Bearer {api_key}"}, checks=CHECKS, timeout=30
        )

    check()


def test_every_answer_is_the_documented_one(api_schema: Any, api_key: str) -> None:
    """Each operation in turn (schemathesis' pytest plugin does not run
    under this pytest); every failure is reported, not just the first."""
    failures: list[str] = []
    operations = [result.ok() for result in api_schema.get_all_operations()]
    assert len(operations) > 30
    # Rotating revokes the caller's own key: that one goes last.
    operations.sort(key=lambda op: op.path == "/v1/keys/rotate")
    for operation in operations:
        try:
            _check_operation(operation, api_key)
        except BaseException as exc:  # schemathesis raises ExceptionGroups
            if isinstance(exc, KeyboardInterrupt):
                raise
            failures.append(f"{operation.method.upper()} {operation.path}: {exc}"[:1500])
    assert not failures, "\n\n".join(failures)
