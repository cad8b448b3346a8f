"""The operator's Prometheus metrics (``heatshift_*``) and the ``/metrics`` server.

One :class:`Metrics` object owns a private registry, so tests and a second operator in one
process never collide on the global one. The planning cycle records into it; ``heatshift run``
serves it on ``--metrics-port`` at ``/metrics``.

Series:

- ``heatshift_jobs_released_total{site, reason}``: releases; reason is ``heat``, ``deadline``
  or ``heat_unaware`` (site is empty for a deadline release no site could take).
- ``heatshift_deadline_releases_total{policy}``: releases forced by a start deadline.
- ``heatshift_plan_seconds{policy}``: wall time of one planner run (histogram).
- ``heatshift_planner_fallbacks_total{policy}``: cycles whose planner failed or overran and
  fell back to the heat-unaware plan.
- ``heatshift_metering_errors_total{site, kind}``: rejected readings, by rejection kind.
- ``heatshift_heat_delivered_kwh_total{site}``, ``heatshift_heat_dumped_kwh_total{site}``:
  estimated heat, as in LeafSite status.
- ``heatshift_held_jobs{policy}``: workloads held now.
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, start_http_server

PLAN_SECONDS_BUCKETS = (0.01, 0.05, 0.1, 0.25, 0.5, 1.0, 2.0, 5.0, 10.0, 30.0, 60.0)


class Metrics:
    """Every heatshift series, in one registry."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry if registry is not None else CollectorRegistry()
        r = self.registry
        self.jobs_released = Counter(
            "heatshift_jobs_released",
            "Workloads released, by site and reason (heat, deadline, heat_unaware).",
            ["site", "reason"],
            registry=r,
        )
        self.deadline_releases = Counter(
            "heatshift_deadline_releases",
            "Releases forced by a start deadline rather than chosen for heat.",
            ["policy"],
            registry=r,
        )
        self.plan_seconds = Histogram(
            "heatshift_plan_seconds",
            "Wall time of one planner run, seconds.",
            ["policy"],
            buckets=PLAN_SECONDS_BUCKETS,
            registry=r,
        )
        self.planner_fallbacks = Counter(
            "heatshift_planner_fallbacks",
            "Planner runs that failed or overran and fell back to the heat-unaware plan.",
            ["policy"],
            registry=r,
        )
        self.metering_errors = Counter(
            "heatshift_metering_errors",
            "Rejected metering readings, by site and rejection kind.",
            ["site", "kind"],
            registry=r,
        )
        self.heat_delivered = Counter(
            "heatshift_heat_delivered_kwh",
            "Estimated heat delivered to offtakers, kWh.",
            ["site"],
            registry=r,
        )
        self.heat_dumped = Counter(
            "heatshift_heat_dumped_kwh",
            "Estimated heat dumped through dry coolers, kWh.",
            ["site"],
            registry=r,
        )
        self.held_jobs = Gauge(
            "heatshift_held_jobs",
            "Workloads held now, by policy.",
            ["policy"],
            registry=r,
        )

    def serve(self, port: int, addr: str = "0.0.0.0") -> int:
        """Serve ``/metrics`` on ``port`` (0: any free port) from a background thread;
        returns the port bound."""
        server, _ = start_http_server(port, addr=addr, registry=self.registry)
        return int(server.server_port)
