"""schemathesis against the metering contract (``openapi.yaml``) for the reference server.

The server runs on 127.0.0.1 (a free port) in a thread with its own event loop, for this
module only; schemathesis generates requests from the contract (a small budget per operation,
so it fits in ``make test``) and checks every answer: no 5xx, a documented status and content
type, and a body that conforms to the contract's schema.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Iterator
from typing import Any

import pytest
import schemathesis
import yaml
from hypothesis import HealthCheck, settings

from heatshift.metering import server as metering_server
from metering_fixtures import tiny_scenario

CONTRACT: dict[str, Any] = yaml.safe_load(metering_server.contract_text())
schema = schemathesis.openapi.from_dict(CONTRACT)


@pytest.fixture(scope="module")
def base_url() -> Iterator[str]:
    loop = asyncio.new_event_loop()
    sim = metering_server.MeterSimulation(tiny_scenario(), forecast_horizon_s=3600.0)
    server = metering_server.MeteringServer(sim, port=0, tick_s=None)
    ready = threading.Event()
    stop = asyncio.Event()

    async def run() -> None:
        async with server:
            ready.set()
            await stop.wait()

    thread = threading.Thread(target=loop.run_until_complete, args=(run(),), daemon=True)
    thread.start()
    assert ready.wait(10.0), "the reference server did not start"
    try:
        yield server.url
    finally:
        loop.call_soon_threadsafe(stop.set)
        thread.join(10.0)
        loop.close()


@schema.parametrize()
@settings(max_examples=30, deadline=None, suppress_health_check=list(HealthCheck))
def test_the_reference_server_keeps_the_contract_for_generated_requests(
    case: schemathesis.Case, base_url: str
) -> None:
    case.call_and_validate(base_url=base_url)
