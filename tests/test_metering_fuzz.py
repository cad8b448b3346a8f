"""Fuzz targets of the metering payload parsers (hypothesis, a small budget for ``make test``).

Whatever arrives — any JSON-like value, any bytes under any content type, any Prometheus
answer — the parsers never raise: a reading satisfies every bound, anything else is a
rejection (or, for one Prometheus sample, a metering error) with a message in words.
"""

from __future__ import annotations

import json
import math
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from heatshift import bounds
from heatshift.metering import errors, readings
from heatshift.metering import http as metering_http
from heatshift.metering import prometheus as metering_prometheus
from metering_fixtures import LIMITS, NOW, raw_reading

FUZZ = settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])

FIELDS = [
    "siteId",
    "observedAt",
    "heatDemandKW",
    "tank",
    "energyKWh",
    "capacityKWh",
    "topTempC",
    "bottomTempC",
    "volumeL",
    "supplyTempC",
    "returnTempC",
    "offtakerAvailable",
    "forecast",
    "start",
    "stepSeconds",
    "demandKW",
]
numbers = st.one_of(
    st.floats(allow_nan=True, allow_infinity=True),
    st.integers(min_value=-(10**400), max_value=10**400),
    st.sampled_from([0, 1e-300, 59.999, 60, 86400, 86401, 1e20, -1e20, 80.0, 84.0, 5e5]),
)
times = st.one_of(
    st.datetimes().map(lambda d: d.isoformat()),
    st.sampled_from(
        [
            readings.format_time(NOW),
            readings.format_time(NOW - 30),
            "20261202T013228+0000",
            "2026-12-02T01:32:28",
            "1969-12-31T23:59:59Z",
            "2100-01-01T00:00:01Z",
            "9999-12-31T23:59:59.999999999+14:00",
        ]
    ),
)
scalars = st.one_of(st.none(), st.booleans(), numbers, times, st.text(max_size=20))
json_like = st.recursive(
    scalars,
    lambda children: st.one_of(
        st.lists(children, max_size=6),
        st.dictionaries(
            st.one_of(st.sampled_from(FIELDS), st.text(max_size=8)), children, max_size=8
        ),
    ),
    max_leaves=30,
)


def _mutated(base: dict[str, Any], path: list[str], value: object) -> dict[str, Any]:
    """``base`` with the field at ``path`` (a nested key list) replaced by ``value``."""
    out = json.loads(json.dumps(base))
    target = out
    for key in path[:-1]:
        child = target.get(key)
        if not isinstance(child, dict):
            child = {}
            target[key] = child
        target = child
    target[path[-1]] = value
    return out


VALID_FORECAST = {
    "start": readings.format_time(NOW),
    "stepSeconds": 900,
    "demandKW": [1.0, 2.0],
}
PATHS = [[f] for f in FIELDS[:3]] + [
    ["tank", "energyKWh"],
    ["tank", "capacityKWh"],
    ["tank", "topTempC"],
    ["tank", "volumeL"],
    ["supplyTempC"],
    ["returnTempC"],
    ["offtakerAvailable"],
    ["forecast", "start"],
    ["forecast", "stepSeconds"],
    ["forecast", "demandKW"],
]
near_valid = st.builds(
    _mutated,
    st.just(raw_reading(forecast=VALID_FORECAST)),
    st.sampled_from(PATHS),
    json_like,
)


def check_result(result: object) -> None:
    """A rejection in words, or a reading within every bound."""
    if isinstance(result, readings.Rejection):
        assert result.message and "\n" not in result.message
        assert result.condition_reason.startswith(("Reading", "Metering"))
        return
    assert isinstance(result, readings.SiteReading), result
    assert bounds.timestamp_problem(result.observed_at_s, "observedAt") is None
    assert NOW - LIMITS.staleness_limit_s <= result.observed_at_s <= NOW + LIMITS.max_clock_skew_s
    assert 0 <= result.demand_kw <= LIMITS.max_thermal_kw * readings.DEMAND_TOLERANCE
    assert 0 <= result.tank_energy_kwh <= LIMITS.tank_capacity_kwh * readings.TANK_TOLERANCE
    assert math.isfinite(result.tank_capacity_kwh)
    for t in (result.supply_temp_c, result.return_temp_c):
        assert t is None or bounds.MIN_TEMPERATURE_C <= t <= bounds.MAX_TEMPERATURE_C
    series = result.forecast
    if series is not None:
        assert bounds.FORECAST_STEP.problem(series.step_s) is None
        assert 1 <= len(series.kw) <= bounds.MAX_SERIES_SAMPLES
        assert bounds.timestamp_problem(series.start_s, "start") is None
        end = series.start_s + len(series.kw) * series.step_s
        assert bounds.timestamp_problem(end, "end") is None
        assert all(0 <= x <= LIMITS.max_thermal_kw * readings.DEMAND_TOLERANCE for x in series.kw)


@FUZZ
@given(st.one_of(json_like, near_valid))
def test_fuzz_validate_reading_never_raises_and_readings_keep_the_bounds(raw: object) -> None:
    check_result(readings.validate_with(raw, LIMITS, now_s=NOW, site="pool"))


def _encode(value: object) -> bytes:
    return json.dumps(value).encode()


bodies = st.one_of(
    st.binary(max_size=300),
    st.builds(_encode, st.one_of(json_like, near_valid)),
    st.builds(lambda v: _encode(v).replace(b"{", b'{"siteId": "x", ', 1), near_valid),
    st.builds(lambda v: _encode(v).decode().encode("utf-16"), near_valid),
)
content_types = st.one_of(
    st.none(),
    st.sampled_from(
        [
            "application/json",
            "application/json; charset=utf-8",
            "application/problem+json",
            "application/json; charset=latin-1",
            "text/html",
            "text/json",
            "",
        ]
    ),
    st.text(max_size=30),
)


@FUZZ
@given(bodies, content_types)
def test_fuzz_the_json_decoding_path_never_raises(body: bytes, content_type: str | None) -> None:
    result = metering_http.reading_from_body(body, content_type, LIMITS, now_s=NOW, site="pool")
    check_result(result)


prom_answers = st.one_of(
    json_like,
    st.builds(
        lambda kind, result: {"status": "success", "data": {"resultType": kind, "result": result}},
        st.sampled_from(["vector", "scalar", "matrix", "string", "other"]),
        json_like,
    ),
    st.builds(
        lambda t, v: {
            "status": "success",
            "data": {"resultType": "vector", "result": [{"metric": {}, "value": [t, v]}]},
        },
        numbers,
        st.one_of(st.text(max_size=12), numbers.map(str)),
    ),
)


@FUZZ
@given(prom_answers)
def test_fuzz_a_prometheus_answer_is_one_bounded_sample_or_a_metering_error(answer: object) -> None:
    try:
        t, _ = metering_prometheus.parse_sample(answer, "heat demand")
    except errors.MeteringError as err:
        assert err.message and "\n" not in err.message
    else:
        assert bounds.timestamp_problem(t, "t") is None
        readings.format_time(t)  # within bounds, so it formats
