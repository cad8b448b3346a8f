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
- ``heatshift_held_jobs{policy}``: workloads held now.

The heat ledger (:mod:`heatshift.ledger`), in base units; ``source`` is ``metered`` (from
meter register deltas) or ``estimated`` (heatshift's estimate where the meter has no register):

- ``heatshift_it_energy_joules_total{site, source}``, ``heatshift_heat_delivered_joules_total
  {site, source}``, ``heatshift_heat_dumped_joules_total{site, source}``: energy counted;
- ``heatshift_fuel_avoided_joules_total{site}``, ``heatshift_co2_avoided_grams_total{site}``:
  what the backup did not burn and emit;
- ``heatshift_dumped_while_wanted_seconds_total{site}``,
  ``heatshift_below_min_supply_temperature_seconds_total{site}``;
- ``heatshift_ledger_energy_joules{site, energy, period}``: the ledger's figures as in
  LeafSite status (``energy`` is ``it``, ``delivered``, ``dumped``, ``fuel_avoided``;
  ``period`` is ``current`` or ``previous``), and
  ``heatshift_energy_reuse_effectiveness_ratio{site, period}``;
- gauges of the last reading: ``heatshift_it_power_watts{site}``,
  ``heatshift_heat_demand_watts{site}``, ``heatshift_tank_energy_joules{site}``,
  ``heatshift_supply_temperature_celsius{site}``, ``heatshift_return_temperature_celsius{site}``.
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, start_http_server

from heatshift import ledger
from heatshift.metering import readings

JOULES_PER_KWH = 3.6e6
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
        self.it_energy = Counter(
            "heatshift_it_energy_joules",
            "IT energy drawn, J; source metered (register deltas) or estimated.",
            ["site", "source"],
            registry=r,
        )
        self.heat_delivered = Counter(
            "heatshift_heat_delivered_joules",
            "Heat delivered to offtakers, J; source metered or estimated.",
            ["site", "source"],
            registry=r,
        )
        self.heat_dumped = Counter(
            "heatshift_heat_dumped_joules",
            "Heat dumped through dry coolers, J; source metered or estimated.",
            ["site", "source"],
            registry=r,
        )
        self.fuel_avoided = Counter(
            "heatshift_fuel_avoided_joules",
            "Fuel the offtakers' backup did not burn, J.",
            ["site"],
            registry=r,
        )
        self.co2_avoided = Counter(
            "heatshift_co2_avoided_grams",
            "CO2 the offtakers' backup did not emit, g.",
            ["site"],
            registry=r,
        )
        self.dumped_while_wanted = Counter(
            "heatshift_dumped_while_wanted_seconds",
            "Time heat was dumped while the offtaker wanted heat, s.",
            ["site"],
            registry=r,
        )
        self.below_min_supply = Counter(
            "heatshift_below_min_supply_temperature_seconds",
            "Time the supply temperature was below the contracted minimum, s.",
            ["site"],
            registry=r,
        )
        self.ledger_energy = Gauge(
            "heatshift_ledger_energy_joules",
            "The ledger's energy of a period as in LeafSite status, J.",
            ["site", "energy", "period"],
            registry=r,
        )
        self.ere = Gauge(
            "heatshift_energy_reuse_effectiveness_ratio",
            "ERE of a ledger period: (facility energy - reused energy) / IT energy.",
            ["site", "period"],
            registry=r,
        )
        self.it_power = Gauge(
            "heatshift_it_power_watts", "IT power of the site now, W.", ["site"], registry=r
        )
        self.heat_demand = Gauge(
            "heatshift_heat_demand_watts",
            "The offtaker's heat demand, last valid reading, W.",
            ["site"],
            registry=r,
        )
        self.tank_energy = Gauge(
            "heatshift_tank_energy_joules",
            "Energy in the buffer tank, last valid reading, J.",
            ["site"],
            registry=r,
        )
        self.supply_temperature = Gauge(
            "heatshift_supply_temperature_celsius",
            "Supply temperature to the offtaker, last valid reading, °C.",
            ["site"],
            registry=r,
        )
        self.return_temperature = Gauge(
            "heatshift_return_temperature_celsius",
            "Return temperature from the offtaker, last valid reading, °C.",
            ["site"],
            registry=r,
        )
        self.held_jobs = Gauge(
            "heatshift_held_jobs",
            "Workloads held now, by policy.",
            ["policy"],
            registry=r,
        )

    def record_site(
        self,
        site: str,
        outcome: ledger.Outcome,
        reading: readings.SiteReading | None,
        *,
        it_power_watts: float,
        backup_efficiency: float,
        emission_factor_kg_per_kwh: float,
    ) -> None:
        """One site's cycle: the ledger's additions as counters, its figures and the last
        reading as gauges."""
        counters = {
            ledger.Energy.IT: self.it_energy,
            ledger.Energy.DELIVERED: self.heat_delivered,
            ledger.Energy.DUMPED: self.heat_dumped,
        }
        for (energy, source), kwh in outcome.added_kwh.items():
            counters[energy].labels(site=site, source=source.value).inc(kwh * JOULES_PER_KWH)
        delivered = sum(
            v for (e, _), v in outcome.added_kwh.items() if e is ledger.Energy.DELIVERED
        )
        fuel = ledger.fuel_avoided_kwh(delivered, backup_efficiency)
        self.fuel_avoided.labels(site=site).inc(fuel * JOULES_PER_KWH)
        co2 = ledger.co2_avoided_kg(fuel, emission_factor_kg_per_kwh)
        self.co2_avoided.labels(site=site).inc(co2 * 1000.0)
        self.dumped_while_wanted.labels(site=site).inc(
            outcome.added_seconds.get("dumped_while_wanted", 0.0)
        )
        self.below_min_supply.labels(site=site).inc(
            outcome.added_seconds.get("below_min_supply_temp", 0.0)
        )
        periods = (("current", outcome.ledger.current), ("previous", outcome.ledger.previous))
        for name, period in periods:
            if period is None:
                continue
            for label, kwh in (
                ("it", period.it_energy.kwh),
                ("delivered", period.heat_delivered.kwh),
                ("dumped", period.heat_dumped.kwh),
                ("fuel_avoided", period.fuel_avoided_kwh),
            ):
                self.ledger_energy.labels(site=site, energy=label, period=name).set(
                    kwh * JOULES_PER_KWH
                )
            if period.ere is not None:
                self.ere.labels(site=site, period=name).set(period.ere)
        self.it_power.labels(site=site).set(it_power_watts)
        if reading is not None:
            self.heat_demand.labels(site=site).set(reading.demand_kw * 1000.0)
            self.tank_energy.labels(site=site).set(reading.tank_energy_kwh * JOULES_PER_KWH)
            if reading.supply_temp_c is not None:
                self.supply_temperature.labels(site=site).set(reading.supply_temp_c)
            if reading.return_temp_c is not None:
                self.return_temperature.labels(site=site).set(reading.return_temp_c)

    def serve(self, port: int, addr: str = "0.0.0.0") -> int:
        """Serve ``/metrics`` on ``port`` (0: any free port) from a background thread;
        returns the port bound."""
        server, _ = start_http_server(port, addr=addr, registry=self.registry)
        return int(server.server_port)
