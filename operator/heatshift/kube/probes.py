"""The kubelet's probes: ``/healthz`` (liveness) and ``/readyz`` (readiness), on one port.

They answer different questions, so they must not share an endpoint:

- **alive**: the event loop answers. A loop blocked for good is what a restart cures; a cluster
  that cannot be reached is not (a restarted replica cannot reach it either).
- **ready**: this replica knows what the admission webhook decides on, so the Service may send
  it webhook calls, and a rolling update may retire the replica it replaces. Until its
  informers have listed the HeatPolicies, Namespaces, Jobs and Pods once, the webhook lets
  every Job through unheld (compute never waits on heatshift); a replica the Service picked
  that early would let through Jobs a policy should hold. Once listed, it stays ready: a view
  that falls behind while the API server is away still decides as well as anything can.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

import aiohttp.web

log = logging.getLogger(__name__)

LIVENESS_PATH = "/healthz"
READINESS_PATH = "/readyz"


class ProbeServer:
    """``/healthz`` always answers 200 while the loop runs; ``/readyz`` answers 200 once
    ``not_ready()`` returns None, and 503 with its reason in plain words until then."""

    def __init__(self, not_ready: Callable[[], str | None]) -> None:
        self._not_ready = not_ready
        self._runner: aiohttp.web.AppRunner | None = None

    async def start(self, host: str, port: int) -> None:
        app = aiohttp.web.Application()
        app.router.add_get(LIVENESS_PATH, self._alive)
        app.router.add_get(READINESS_PATH, self._ready)
        self._runner = aiohttp.web.AppRunner(app, handle_signals=False, shutdown_timeout=1.0)
        await self._runner.setup()
        await aiohttp.web.TCPSite(self._runner, host, port).start()
        log.debug("probes served at http://%s:%d%s and %s", host, port, LIVENESS_PATH,
                  READINESS_PATH)  # fmt: skip

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    async def _alive(self, _: aiohttp.web.Request) -> aiohttp.web.Response:
        return aiohttp.web.Response(text="alive\n")

    async def _ready(self, _: aiohttp.web.Request) -> aiohttp.web.Response:
        why = self._not_ready()
        if why is None:
            return aiohttp.web.Response(text="ready\n")
        return aiohttp.web.Response(status=503, text=f"not ready: {why}\n")
