"""The operator's Prometheus series: names, labels, and the /metrics endpoint."""

from __future__ import annotations

import urllib.request

from heatshift import metrics

EXPECTED = {
    "heatshift_jobs_released_total": ("site", "reason"),
    "heatshift_deadline_releases_total": ("policy",),
    "heatshift_plan_seconds_bucket": ("policy", "le"),
    "heatshift_planner_fallbacks_total": ("policy",),
    "heatshift_metering_errors_total": ("site", "kind"),
    "heatshift_heat_delivered_joules_total": ("site", "source"),
    "heatshift_heat_dumped_joules_total": ("site", "source"),
    "heatshift_it_energy_joules_total": ("site", "source"),
    "heatshift_held_jobs": ("policy",),
}


def _touch(m: metrics.Metrics) -> None:
    m.jobs_released.labels(site="pool", reason="heat").inc()
    m.deadline_releases.labels(policy="batch").inc()
    m.plan_seconds.labels(policy="batch").observe(0.3)
    m.planner_fallbacks.labels(policy="batch").inc()
    m.metering_errors.labels(site="pool", kind="stale").inc()
    m.heat_delivered.labels(site="pool", source="metered").inc(1.5)
    m.heat_dumped.labels(site="pool", source="estimated").inc(0.5)
    m.it_energy.labels(site="pool", source="metered").inc(2.5)
    m.held_jobs.labels(policy="batch").set(4)


def test_every_series_has_its_name_and_labels() -> None:
    m = metrics.Metrics()
    _touch(m)
    found = {
        sample.name: tuple(sorted(sample.labels))
        for family in m.registry.collect()
        for sample in family.samples
    }
    for name, labels in EXPECTED.items():
        assert found.get(name) == tuple(sorted(labels)), name
    assert m.registry.get_sample_value("heatshift_held_jobs", {"policy": "batch"}) == 4


def test_two_registries_do_not_collide() -> None:
    a, b = metrics.Metrics(), metrics.Metrics()
    a.jobs_released.labels(site="x", reason="heat").inc()
    labels = {"site": "x", "reason": "heat"}
    assert b.registry.get_sample_value("heatshift_jobs_released_total", labels) is None


def test_metrics_are_served_on_the_metrics_path() -> None:
    m = metrics.Metrics()
    _touch(m)
    port = m.serve(0, addr="127.0.0.1")
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as response:
        text = response.read().decode()
    assert 'heatshift_jobs_released_total{reason="heat",site="pool"} 1.0' in text
    assert "heatshift_plan_seconds_bucket" in text
