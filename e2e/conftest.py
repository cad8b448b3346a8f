"""Fixtures of the e2e suite: one cluster for the whole run, heatshift installed on it once.

``cluster`` is the API server with the chart installed (CRDs, RBAC, webhook configuration);
``heatshift`` adds the metering reference server and the operator. Scenarios that only need the
API server (CRD validation) take ``cluster``, so they run and report on their own even when the
operator does not start.
"""

from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

sys.path.insert(0, str(Path(__file__).parent))

import harness


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """The chart's pods first: their cluster of their own is gone before the shared one
    starts. The Kueue scenarios last: their load on the sites must not change the others'
    verdicts."""
    items.sort(
        key=lambda item: (item.path.name != "test_pods.py", item.path.name == "test_kueue.py")
    )


@pytest.fixture(scope="session")
def cluster() -> Iterator[harness.Heatshift]:
    with harness.work_directory() as work:
        print(f"\ne2e work directory (logs, kubeconfigs): {work}", file=sys.stderr)
        made = harness.choose_cluster(work)
        deployment = harness.Heatshift(made)
        try:
            deployment.install_chart()
            yield deployment
        finally:
            deployment.stop()
            made.stop()


@pytest.fixture(scope="session")
def heatshift(cluster: harness.Heatshift) -> harness.Heatshift:
    cluster.start_metering()
    docs = list(
        yaml.safe_load_all(harness.load_fixture("sites.yaml", METERING_URL=cluster.metering_url))
    )
    if cluster.start_prometheus():
        # The greenhouse reads the same meter through Prometheus, which scrapes it: the
        # Prometheus metering source against a real server.
        (greenhouse,) = [d for d in docs if d["metadata"]["name"] == "greenhouse"]
        greenhouse["spec"]["metering"] = {
            "prometheus": {
                "url": cluster.prometheus_url,
                "queries": {
                    "demandKW": 'heatshift_meter_heat_demand_kw{site="greenhouse"}',
                    "tankEnergyKWh": 'heatshift_meter_tank_energy_kwh{site="greenhouse"}',
                    # The meter's registers as counters, for the ledger.
                    "heatDeliveredKWh": (
                        'heatshift_meter_heat_delivered_kwh_total{site="greenhouse"}'
                    ),
                    "itEnergyKWh": 'heatshift_meter_it_energy_kwh_total{site="greenhouse"}',
                },
                "timeoutSeconds": 2,
            }
        }
    cluster.kube.apply(yaml.safe_dump_all(docs))
    if not cluster.cluster.in_cluster_operator:
        cluster.start_operator()
    return cluster
