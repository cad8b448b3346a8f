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
