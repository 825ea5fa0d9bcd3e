"""Schemathesis against the OpenAPI spec of the running API: whatever it sends, no 5xx.

(Schemathesis' own pytest plugin does not load under pytest 9 yet, so each operation's
strategy is run with a plain hypothesis ``@given``.)"""

from __future__ import annotations

from collections.abc import Callable

import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings

pytestmark = pytest.mark.integration


def test_no_server_errors(api_url: str, mint: Callable[..., str]) -> None:
    schema = schemathesis.openapi.from_url(f"{api_url}/openapi.json")
    headers = {"Authorization": f"Bearer {mint('fuzz-user', 'free')}", "Connection": "close"}
    seen: list[str] = []
    failures: list[tuple] = []
    for result in schema.get_all_operations():
        op = result.ok()
        seen.append(f"{op.method.upper()} {op.path}")

        @given(case=op.as_strategy())
        @settings(max_examples=12, deadline=None, suppress_health_check=list(HealthCheck), database=None)
        def run(case) -> None:  # type: ignore[no-untyped-def]
            response = case.call(base_url=api_url, headers=headers, timeout=30)
            if response.status_code >= 500:
                failures.append((case.method, case.formatted_path, response.status_code, response.text[:300]))

        run()
    assert len(seen) >= 14, seen
    assert not failures, failures[:5]
