"""``heatshift report``: the ledger per site and fleet, from LeafSite status or a simulation."""

from __future__ import annotations

import csv
import datetime
import io
import json
from pathlib import Path
from typing import Any

import pytest

from heatshift import billing, cli, resources

JAN = datetime.datetime(2026, 1, 1, tzinfo=datetime.UTC)
FEB = datetime.datetime(2026, 2, 1, tzinfo=datetime.UTC)


def quantity(kwh: float, source: str = "metered") -> dict[str, Any]:
    return {"kwh": kwh, "meteredKWh": kwh if source == "metered" else 0.0, "source": source}


def leafsite(name: str, it: float, delivered: float, ere: float, source: str) -> resources.LeafSite:
    period = {
        "start": JAN.isoformat(),
        "end": FEB.isoformat(),
        "itEnergy": quantity(it, source),
        "heatDelivered": quantity(delivered),
        "heatDumped": quantity(it - delivered),
        "hoursDumpedWhileWanted": 1.5,
        "ere": ere,
        "fuelAvoidedKWh": delivered / 0.9,
        "co2AvoidedKg": delivered / 0.9 * 0.202,
    }
    doc = {
        "apiVersion": resources.GROUP_VERSION,
        "kind": "LeafSite",
        "metadata": {"name": name},
        "spec": {
            "nodeSelector": {"heatshift.dev/site": name},
            "power": {"wattsPerGPU": 300},
            "tank": {"capacityKWh": 50},
            "offtaker": {"kind": "pool", "maxThermalKW": 40},
            "metering": {"http": {"url": "https://meter.example/v1", "siteId": name}},
        },
        "status": {"ledger": {"period": "month", "updatedAt": JAN.isoformat(), "current": period}},
    }
    parsed = resources.parse_resource(doc)
    assert isinstance(parsed, resources.LeafSite)
    return parsed


SITES = [
    leafsite("pool", 100.0, 80.0, 0.2, "metered"),
    leafsite("flats", 300.0, 240.0, 0.2 + 0.1 / 3, "estimated"),
]


def test_the_fleet_of_100_and_300_kwh_it_at_ere_0_2_and_0_233_has_ere_0_225() -> None:
    rows = billing.rows_from_leafsites(SITES, "current")
    assert [r.site for r in rows] == ["flats", "pool"]
    (fleet,) = billing.fleet_rows(rows)
    assert fleet.site == "fleet"
    assert fleet.it_energy_kwh == 400.0 and fleet.heat_delivered_kwh == 320.0
    # (100 x 0.2 + 300 x 0.2333) / 400 = 90 / 400
    assert fleet.ere == pytest.approx(0.225)
    assert fleet.it_energy_source == "mixed" and fleet.heat_delivered_source == "metered"
    assert fleet.hours_dumped_while_wanted == 3.0
    assert fleet.fuel_avoided_kwh == pytest.approx(320.0 / 0.9)


def test_no_previous_period_gives_no_rows() -> None:
    assert billing.rows_from_leafsites(SITES, "previous") == []


def test_csv_and_json_carry_the_same_numbers() -> None:
    rows = billing.rows_from_leafsites(SITES, "current")
    table = list(csv.DictReader(io.StringIO(billing.render(rows, "csv"))))
    doc = json.loads(billing.render(rows, "json"))
    assert [r["site"] for r in table] == ["flats", "pool", "fleet"]
    assert float(table[2]["heat_delivered_kwh"]) == doc["fleet"][0]["heat_delivered_kwh"] == 320.0
    assert table[1]["it_energy_source"] == "metered"
    assert table[0]["it_energy_source"] == "estimated"
    text = billing.render(rows, "table")
    assert "estimated" in text and "fleet" in text.splitlines()[-1]


def test_report_from_a_simulation_result(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    doc = {
        "scenario": "tiny",
        "results": [
            {
                "policy": "heatshift",
                "sites": {
                    "pool": {
                        "it_energy_kwh": 10.0,
                        "heat_delivered_kwh": 8.5,
                        "heat_dumped_kwh": 0.0,
                        "ere": 0.15,
                        "fuel_avoided_kwh": 8.5 / 0.9,
                        "co2_avoided_kg": 8.5 / 0.9 * 0.202,
                    }
                },
            }
        ],
    }
    path = tmp_path / "sim.json"
    path.write_text(json.dumps(doc))
    assert cli.main(["report", "--simulation", str(path), "--format", "json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["sites"][0]["policy"] == "heatshift"
    assert out["fleet"][0]["ere"] == pytest.approx(0.15)
    assert cli.main(["report", "--simulation", str(path), "--policy", "oracle"]) == 2
    assert "no policy 'oracle'" in capsys.readouterr().err


def test_report_of_a_file_that_is_no_simulation_is_a_usage_error(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "sim.json"
    path.write_text('{"results": [{"policy": "x"}]}')
    assert cli.main(["report", "--simulation", str(path)]) == 2
    assert "no per-site ledger" in capsys.readouterr().err
