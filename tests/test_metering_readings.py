"""Validation of metering readings, and what the planner makes of a reading or a rejection.

Table-driven: each bad reading names the rejection kind and the words an operator will read.
"""

from __future__ import annotations

import math
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from heatshift.metering import readings
from metering_fixtures import LIMITS, NOW, raw_reading, validate

import builders

Kind = readings.RejectionKind


def test_a_valid_reading_keeps_its_values() -> None:
    result = validate(raw_reading())
    assert isinstance(result, readings.SiteReading)
    assert result.site == "pool"
    assert result.observed_at_s == pytest.approx(NOW - 30.0)
    assert result.demand_kw == 12.5
    assert result.tank_energy_kwh == 40.0
    assert result.tank_capacity_kwh == 80.0
    assert result.tank_source == "energy"
    assert (result.supply_temp_c, result.return_temp_c) == (45.0, 30.0)
    assert result.offtaker_available
    assert result.forecast is None
    assert result.warnings == ()


REJECTED: list[tuple[str, object, Kind, str]] = [
    ("not an object", [1, 2], Kind.MALFORMED, "reading is not a JSON object (got a list)"),
    ("another site", raw_reading("flats"), Kind.MALFORMED, "reading is for site 'flats'"),
    ("no site id", raw_reading(siteId=None), Kind.MISSING, "site id is missing"),
    ("no time", raw_reading(observedAt=None), Kind.MISSING, "observation time is missing"),
    (
        "time not RFC 3339",
        raw_reading(observedAt="yesterday"),
        Kind.MALFORMED,
        "observation time 'yesterday' is not an RFC 3339 time",
    ),
    (
        "time without offset",
        raw_reading(observedAt="2023-11-14T22:13:00"),
        Kind.MALFORMED,
        "has no time zone offset",
    ),
    ("no demand", raw_reading(heatDemandKW=None), Kind.MISSING, "heat demand is missing"),
    ("demand NaN", raw_reading(heatDemandKW=math.nan), Kind.NAN, "heat demand is NaN"),
    ("demand infinite", raw_reading(heatDemandKW=math.inf), Kind.NAN, "heat demand is infinite"),
    (
        "demand negative",
        raw_reading(heatDemandKW=-3.0),
        Kind.NEGATIVE,
        "heat demand is negative (-3 kW)",
    ),
    (
        "demand a string",
        raw_reading(heatDemandKW="12"),
        Kind.MALFORMED,
        "heat demand is not a number (got the text '12')",
    ),
    (
        "demand a boolean",
        raw_reading(heatDemandKW=True),
        Kind.MALFORMED,
        "heat demand is not a number (got a boolean)",
    ),
    (
        "demand above rating",
        raw_reading(heatDemandKW=60.0),
        Kind.OUT_OF_RANGE,
        "heat demand 60 kW exceeds the offtaker's rating 50 kW",
    ),
    ("demand huge integer", raw_reading(heatDemandKW=10**400), Kind.OUT_OF_RANGE, "too large"),
    ("no tank", raw_reading(tank=None), Kind.MISSING, "tank state is missing"),
    ("tank empty object", raw_reading(tank={}), Kind.MISSING, "tank state is missing"),
    ("tank a number", raw_reading(tank=4), Kind.MALFORMED, "tank is not an object"),
    (
        "tank above capacity",
        raw_reading(tank={"energyKWh": 95.0}),
        Kind.OUT_OF_RANGE,
        "tank energy 95 kWh exceeds capacity 80 kWh",
    ),
    (
        "tank above its reported capacity",
        raw_reading(tank={"energyKWh": 70.0, "capacityKWh": 60.0}),
        Kind.OUT_OF_RANGE,
        "tank energy 70 kWh exceeds capacity 60 kWh",
    ),
    (
        "tank energy negative",
        raw_reading(tank={"energyKWh": -1.0}),
        Kind.NEGATIVE,
        "tank energy is negative (-1 kWh)",
    ),
    ("tank NaN", raw_reading(tank={"energyKWh": math.nan}), Kind.NAN, "tank energy is NaN"),
    (
        "supply temperature NaN",
        raw_reading(supplyTempC=math.nan),
        Kind.NAN,
        "supply temperature is NaN",
    ),
    (
        "return temperature implausible",
        raw_reading(returnTempC=400.0),
        Kind.OUT_OF_RANGE,
        "return temperature 400 °C is outside -50..200 °C",
    ),
    (
        "no availability",
        raw_reading(offtakerAvailable=None),
        Kind.MISSING,
        "offtaker availability is missing",
    ),
    (
        "availability a number",
        raw_reading(offtakerAvailable=1),
        Kind.MALFORMED,
        "offtaker availability is not true or false",
    ),
    (
        "offtaker unavailable",
        raw_reading(offtakerAvailable=False),
        Kind.UNAVAILABLE,
        "offtaker reports it cannot take heat now",
    ),
    ("stale", raw_reading(age_s=14 * 60 + 10), Kind.STALE, "reading is 14 min old, limit 10 min"),
    (
        "just stale",
        raw_reading(age_s=610),
        Kind.STALE,
        "reading is 610 s old, limit 600 s",
    ),
    ("days stale", raw_reading(age_s=3 * 86400), Kind.STALE, "reading is 3 days old"),
    (
        "from the future",
        raw_reading(age_s=-300),
        Kind.OUT_OF_RANGE,
        "reading is dated 5 min in the future (clock skew? limit 60 s)",
    ),
]


@pytest.mark.parametrize(
    ("raw", "kind", "words"), [c[1:] for c in REJECTED], ids=[c[0] for c in REJECTED]
)
def test_a_bad_reading_is_rejected_in_plain_words(raw: object, kind: Kind, words: str) -> None:
    result = validate(raw)
    assert isinstance(result, readings.Rejection), result
    assert result.site == "pool"
    assert result.kind is kind
    assert words in result.message


def test_a_stale_reading_reports_staleness_before_its_values() -> None:
    result = validate(raw_reading(age_s=3600, heatDemandKW=math.nan))
    assert isinstance(result, readings.Rejection)
    assert result.kind is Kind.STALE


def test_within_tolerance_values_pass_and_are_capped_for_the_planner() -> None:
    result = validate(raw_reading(heatDemandKW=53.0, tank={"energyKWh": 82.0}))
    assert isinstance(result, readings.SiteReading)
    site = builders.site("pool", max_thermal_kw=50.0, tank_kwh=80.0)
    state = readings.site_state_from(result, site)
    assert state.heat_aware
    assert state.demand_kw == 50.0
    assert state.tank_energy_kwh == 80.0


def test_the_tank_as_temperatures_counts_heat_above_the_return() -> None:
    tank = {"topTempC": 60.0, "bottomTempC": 40.0, "volumeL": 1000.0}
    result = validate(raw_reading(tank=tank, returnTempC=30.0))
    assert isinstance(result, readings.SiteReading)
    # 1000 kg * 4.186 kJ/(kg K) * (50 - 30) K = 83,720 kJ = 23.26 kWh
    assert result.tank_energy_kwh == pytest.approx(1000 * 4.186 * 20 / 3600)
    assert result.tank_source == "temperatures"
    assert result.tank_capacity_kwh == 80.0


def test_a_tank_colder_than_the_return_holds_nothing() -> None:
    tank = {"topTempC": 28.0, "bottomTempC": 20.0, "volumeL": 5000.0}
    result = validate(raw_reading(tank=tank, returnTempC=30.0))
    assert isinstance(result, readings.SiteReading)
    assert result.tank_energy_kwh == 0.0


@pytest.mark.parametrize(
    ("tank", "extra", "kind", "words"),
    [
        (
            {"topTempC": 60.0, "bottomTempC": 40.0, "volumeL": 1000.0},
            {"returnTempC": None},
            Kind.MISSING,
            "return temperature is missing",
        ),
        (
            {"topTempC": 60.0, "volumeL": 1000.0},
            {},
            Kind.MISSING,
            "tank bottom temperature is missing",
        ),
        (
            {"topTempC": 60.0, "bottomTempC": 40.0, "volumeL": -5.0},
            {},
            Kind.NEGATIVE,
            "tank volume is negative",
        ),
        (
            {"topTempC": 95.0, "bottomTempC": 95.0, "volumeL": 5000.0},
            {},
            Kind.OUT_OF_RANGE,
            "kWh (from temperatures) exceeds capacity 80 kWh",
        ),
    ],
    ids=["no return temperature", "no bottom", "negative volume", "hotter than capacity"],
)
def test_a_bad_temperature_tank_is_rejected(
    tank: dict[str, float], extra: dict[str, Any], kind: Kind, words: str
) -> None:
    result = validate(raw_reading(tank=tank, **extra))
    assert isinstance(result, readings.Rejection)
    assert result.kind is kind
    assert words in result.message


def test_a_valid_forecast_becomes_a_demand_series_on_the_unix_clock() -> None:
    forecast = {
        "start": readings.format_time(NOW),
        "stepSeconds": 900,
        "demandKW": [10.0, 12.0, 0],
    }
    result = validate(raw_reading(forecast=forecast))
    assert isinstance(result, readings.SiteReading)
    assert result.forecast is not None
    assert result.forecast.start_s == pytest.approx(NOW)
    assert result.forecast.step_s == 900.0
    assert result.forecast.kw == (10.0, 12.0, 0.0)
    state = readings.site_state_from(result, builders.site("pool"))
    assert state.demand_forecast == result.forecast


@pytest.mark.parametrize(
    ("forecast", "words"),
    [
        ("soon", "forecast dropped: it is not an object"),
        ({"start": "x", "stepSeconds": 900, "demandKW": [1]}, "its start 'x' is not an RFC"),
        (
            {"start": readings.format_time(NOW), "stepSeconds": 0, "demandKW": [1]},
            "forecast dropped: a forecast's step must be between 1m and 24h, not 0s",
        ),
        (
            {"start": readings.format_time(NOW), "stepSeconds": 900, "demandKW": [1, math.nan]},
            "demandKW[1] is NaN",
        ),
        (
            {"start": readings.format_time(NOW), "stepSeconds": 900, "demandKW": [500]},
            "demandKW[0] 500 kW exceeds",
        ),
        ({"start": readings.format_time(NOW), "stepSeconds": 900, "demandKW": []}, "no values"),
    ],
    ids=["not an object", "bad start", "zero step", "NaN value", "above rating", "empty"],
)
def test_a_bad_forecast_costs_the_forecast_not_the_reading(forecast: object, words: str) -> None:
    result = validate(raw_reading(forecast=forecast))
    assert isinstance(result, readings.SiteReading)
    assert result.forecast is None
    assert len(result.warnings) == 1
    assert words in result.warnings[0]


def test_a_larger_reported_capacity_is_a_warning_and_the_configured_one_wins() -> None:
    result = validate(raw_reading(tank={"energyKWh": 82.0, "capacityKWh": 120.0}))
    assert isinstance(result, readings.SiteReading)
    assert "configured 80 kWh" in result.warnings[0]
    state = readings.site_state_from(result, builders.site("pool", tank_kwh=80.0))
    assert state.tank_energy_kwh == 80.0  # within the tolerance: capped


def test_tank_energy_far_above_the_leafsites_capacity_is_rejected_not_capped() -> None:
    # The meter claims a tank of 1000 kWh; the LeafSite has 80. Capping 500 kWh to 80 would
    # plan with a full tank that nobody measured.
    result = validate(raw_reading(tank={"energyKWh": 500.0, "capacityKWh": 1000.0}))
    assert isinstance(result, readings.Rejection)
    assert result.kind is Kind.OUT_OF_RANGE
    assert result.message == (
        "tank energy 500 kWh exceeds capacity 80 kWh (the LeafSite's; the meter claims 1000 kWh)"
    )
    assert result.condition_reason == "ReadingOutOfRange"


def test_without_an_expected_site_the_reading_names_it() -> None:
    result = validate(raw_reading("flats"), site=None)
    assert isinstance(result, readings.SiteReading)
    assert result.site == "flats"


def test_temperatures_are_optional() -> None:
    result = validate(raw_reading(supplyTempC=None, returnTempC=None))
    assert isinstance(result, readings.SiteReading)
    assert result.supply_temp_c is None


def test_a_rejected_site_plans_heat_unaware_and_says_why() -> None:
    rejection = readings.Rejection(site="m-17", kind=Kind.NAN, message="heat demand is NaN")
    site = builders.site("pool", tank_kwh=40.0)
    state = readings.site_state_from(rejection, site, fallback_tank_kwh=55.0)
    assert state.site == "pool"
    assert not state.heat_aware
    assert state.demand_kw == 0.0
    assert state.tank_energy_kwh == 40.0  # the fallback, capped at capacity
    assert state.reason == "metering reading rejected (nan): heat demand is NaN"
    assert rejection.condition_reason == "ReadingNaN"


def test_every_kind_has_a_condition_reason() -> None:
    for kind in Kind:
        reason = readings.Rejection(site="s", kind=kind, message="m").condition_reason
        assert reason.isalnum() and reason[0].isupper()


def test_limits_come_from_the_site() -> None:
    site = builders.site("pool", max_thermal_kw=25.0, tank_kwh=60.0)
    limits = readings.ReadingLimits.for_site(site, staleness_limit_s=300.0)
    assert (limits.max_thermal_kw, limits.tank_capacity_kwh) == (25.0, 60.0)
    assert limits.staleness_limit_s == 300.0


def test_times_round_trip() -> None:
    text = readings.format_time(NOW + 0.25)
    assert text.endswith("Z")
    assert readings.parse_time(text) == pytest.approx(NOW + 0.25)
    assert readings.parse_time("2023-11-15T00:13:20+02:00") == pytest.approx(NOW)


# --- never raises ---------------------------------------------------------------------------

json_scalars = (
    st.none()
    | st.booleans()
    | st.integers()
    | st.integers(min_value=10**300, max_value=10**400)
    | st.floats(allow_nan=True, allow_infinity=True)
    | st.text(max_size=40)
)
json_values = st.recursive(
    json_scalars,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=12), inner),
    max_leaves=20,
)
FIELDS = [
    "siteId",
    "observedAt",
    "heatDemandKW",
    "tank",
    "supplyTempC",
    "returnTempC",
    "offtakerAvailable",
    "forecast",
]
tank_values = st.fixed_dictionaries(
    {},
    optional={
        k: json_values | st.floats()
        for k in ["energyKWh", "capacityKWh", "topTempC", "bottomTempC", "volumeL"]
    },
)
forecast_values = st.fixed_dictionaries(
    {},
    optional={
        "start": st.text(max_size=30) | st.just(readings.format_time(NOW)),
        "stepSeconds": json_values,
        "demandKW": st.lists(json_scalars, max_size=5) | json_values,
    },
)


@given(raw=json_values)
def test_validation_never_raises_on_any_json(raw: object) -> None:
    result = validate(raw)
    assert isinstance(result, readings.SiteReading | readings.Rejection)


@given(
    changes=st.dictionaries(
        st.sampled_from(FIELDS), json_values | tank_values | forecast_values, max_size=4
    ),
    site=st.none() | st.just("pool"),
)
def test_validation_never_raises_on_a_damaged_reading(
    changes: dict[str, object], site: str | None
) -> None:
    raw = raw_reading()
    raw.update(changes)
    result = validate(raw, site=site)
    assert isinstance(result, readings.SiteReading | readings.Rejection)
    if isinstance(result, readings.SiteReading):
        assert math.isfinite(result.demand_kw) and result.demand_kw >= 0
        assert 0 <= result.tank_energy_kwh <= LIMITS.tank_capacity_kwh * readings.TANK_TOLERANCE
