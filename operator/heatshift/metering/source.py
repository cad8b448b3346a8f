"""The protocol every metering source implements, so the operator can hold any of them.

Implemented by :class:`heatshift.metering.http.HttpMeteringSource` and
:class:`heatshift.metering.prometheus.PrometheusMeteringSource`; called by the operator once
per planning cycle. A source turns every failure into a per-site rejection: ``fetch`` raises
only for programming errors.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Protocol

from heatshift.metering import readings


class MeteringSource(Protocol):
    """Readings for a set of sites, each checked against its own limits."""

    async def fetch(
        self, sites: Mapping[str, readings.ReadingLimits], now_s: float
    ) -> dict[str, readings.SiteReading | readings.Rejection]:
        """One result per site id in ``sites``; ``now_s`` is Unix time (for staleness)."""
        ...

    async def aclose(self) -> None:
        """Release connections. The source is not used after this."""
        ...
