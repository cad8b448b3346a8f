"""The metering API contract (``openapi.yaml``): well-formed, documented, and kept by the server.

The reference server's answers are checked against the contract's own schemas (JSON Schema
2020-12, which OpenAPI 3.1 uses), so the document and the implementation cannot drift apart.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import httpx
import jsonschema
import pytest
import referencing
import referencing.jsonschema
import yaml

from heatshift import bounds
from heatshift.metering import readings
from heatshift.metering import server as metering_server
from metering_fixtures import FakeClock, raw_reading, tiny_scenario

CONTRACT: dict[str, Any] = yaml.safe_load(metering_server.contract_text())
URI = "urn:heatshift:metering-openapi"
REGISTRY: referencing.Registry[Any] = referencing.Registry().with_resource(
    URI,
    referencing.Resource.from_contents(
        CONTRACT, default_specification=referencing.jsonschema.DRAFT202012
    ),
)


def validator(schema_name: str) -> jsonschema.Draft202012Validator:
    return jsonschema.Draft202012Validator(
        {"$ref": f"{URI}#/components/schemas/{schema_name}"}, registry=REGISTRY
    )


def test_it_is_openapi_3_1_with_the_three_endpoints() -> None:
    assert CONTRACT["openapi"] == "3.1.0"
    assert set(CONTRACT["paths"]) == {"/v1/sites", "/v1/sites/{siteId}/reading", "/v1/readings"}
    assert CONTRACT["components"]["securitySchemes"]["bearerAuth"]["scheme"] == "bearer"
    assert {} in CONTRACT["security"]  # the token is optional


def properties(schema: dict[str, Any], where: str) -> Iterator[tuple[str, dict[str, Any]]]:
    for name, prop in schema.get("properties", {}).items():
        yield f"{where}.{name}", prop


def test_every_schema_and_field_has_a_description() -> None:
    undocumented = []
    for name, schema in CONTRACT["components"]["schemas"].items():
        if "description" not in schema:
            undocumented.append(name)
        for where, prop in properties(schema, name):
            # A $ref-only property takes the description of the schema it names.
            if "description" not in prop and set(prop) != {"$ref"}:
                undocumented.append(where)
    assert undocumented == []


def test_the_schemas_are_valid_json_schema() -> None:
    for name in CONTRACT["components"]["schemas"]:
        jsonschema.Draft202012Validator.check_schema(CONTRACT["components"]["schemas"][name])


def test_the_test_fixtures_speak_the_contract() -> None:
    validator("Reading").validate(raw_reading())
    temperatures = raw_reading(tank={"topTempC": 60, "bottomTempC": 40, "volumeL": 800})
    validator("Reading").validate(temperatures)
    errors = list(validator("Reading").iter_errors(raw_reading(heatDemandKW=-1)))
    assert errors


@pytest.mark.asyncio
async def test_the_reference_server_keeps_the_contract() -> None:
    clock = FakeClock()
    sim = metering_server.MeterSimulation(tiny_scenario(), clock=clock, forecast_horizon_s=3600)
    async with (
        metering_server.MeteringServer(sim, port=0, tick_s=None) as server,
        httpx.AsyncClient(base_url=server.url, timeout=10.0) as http,
    ):
        validator("SiteList").validate((await http.get("/v1/sites")).json())
        reading = (await http.get("/v1/sites/pool/reading")).json()
        validator("Reading").validate(reading)
        readings.parse_time(reading["observedAt"])
        await sim.set_fault("flats", metering_server.FaultMode.DOWN)
        validator("ReadingList").validate((await http.get("/v1/readings")).json())
        for path in ("/v1/sites/flats/reading", "/v1/sites/nowhere/reading"):
            response = await http.get(path)
            assert response.status_code in (503, 404)
            validator("Error").validate(response.json())


def test_the_contract_states_the_shared_bounds() -> None:
    schemas = CONTRACT["components"]["schemas"]
    forecast = schemas["Forecast"]["properties"]
    assert forecast["stepSeconds"]["minimum"] == bounds.FORECAST_STEP.low_s
    assert forecast["stepSeconds"]["maximum"] == bounds.FORECAST_STEP.high_s
    assert forecast["demandKW"]["maxItems"] == bounds.MAX_SERIES_SAMPLES
    assert forecast["demandKW"]["items"]["maximum"] == bounds.MAX_THERMAL_KW
    reading = schemas["Reading"]["properties"]
    assert reading["heatDemandKW"]["maximum"] == bounds.MAX_THERMAL_KW
    assert reading["observedAt"]["pattern"] == readings.RFC3339
    assert forecast["start"]["pattern"] == readings.RFC3339
    temperatures = [reading["supplyTempC"], reading["returnTempC"]] + [
        schemas["TankTemperatures"]["properties"][k] for k in ("topTempC", "bottomTempC")
    ]
    for t in temperatures:
        assert (t["minimum"], t["maximum"]) == (bounds.MIN_TEMPERATURE_C, bounds.MAX_TEMPERATURE_C)
    capacity = schemas["TankEnergy"]["properties"]["capacityKWh"]
    assert capacity["maximum"] == bounds.MAX_TANK_CAPACITY_KWH
    assert f"{bounds.MAX_METERING_RESPONSE_BYTES} bytes" in CONTRACT["info"]["description"]


@pytest.mark.parametrize(
    ("speed", "step_s"), [(1.0, 900.0), (60.0, 60.0), (20.0, 900.0), (0.01, 3600.0)]
)
def test_the_reference_servers_forecast_is_within_the_bounds_at_any_speed(
    speed: float, step_s: float
) -> None:
    # At 60x a 1-minute step lasts a second of wall time: merged into minutes.
    clock = FakeClock()
    scenario = tiny_scenario({"pool": [1.0, 2.0, 3.0, 4.0] * 60, "flats": [0.0]}, step_s=step_s)
    sim = metering_server.MeterSimulation(
        scenario, clock=clock, speed=speed, forecast_horizon_s=4 * step_s * speed
    )
    reading = sim.reading("pool")
    validator("Reading").validate(reading)
    result = readings.validate_with(
        reading, readings.ReadingLimits.for_site(scenario.sites[0], 600.0), now_s=clock()
    )
    assert isinstance(result, readings.SiteReading)
    assert result.warnings == ()
    assert result.forecast is not None
    assert bounds.FORECAST_STEP.problem(result.forecast.step_s) is None


def test_the_reference_server_sends_no_forecast_it_cannot_bound() -> None:
    sim = metering_server.MeterSimulation(
        tiny_scenario(), clock=FakeClock(), speed=1e6, forecast_horizon_s=86400
    )
    assert "forecast" not in sim.reading("pool")
