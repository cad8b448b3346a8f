"""The tank physics: energy is conserved, bounds hold, demand is served first."""

from __future__ import annotations

import math

import pydantic
import pytest
from hypothesis import given
from hypothesis import strategies as st

from heatshift import bounds, model, thermal

energies = st.floats(min_value=0, max_value=500, allow_nan=False)


@given(
    capacity=st.floats(min_value=0, max_value=500),
    fill=st.floats(min_value=0, max_value=1),
    loss=st.floats(min_value=0, max_value=0.2),
    recovered=energies,
    demand=energies,
    hours=st.floats(min_value=0.01, max_value=4),
)
def test_energy_is_conserved_and_bounded(
    capacity: float, fill: float, loss: float, recovered: float, demand: float, hours: float
) -> None:
    tank = model.Tank(capacity_kwh=capacity, loss_per_hour=loss)
    before = capacity * fill
    flows = thermal.exchange_heat(tank, before, recovered, demand, hours)
    balance = (
        flows.recovered_kwh
        - flows.delivered_kwh
        - flows.dumped_kwh
        - flows.loss_kwh
        - (flows.energy_after_kwh - before)
    )
    assert math.isclose(balance, 0.0, abs_tol=1e-9)
    assert 0 <= flows.energy_after_kwh <= capacity + 1e-12
    assert 0 <= flows.delivered_kwh <= demand + 1e-12
    assert flows.dumped_kwh >= -1e-12
    assert flows.loss_kwh >= 0


def test_demand_is_served_before_the_tank_is_filled() -> None:
    tank = model.Tank(capacity_kwh=10, loss_per_hour=0.0)
    flows = thermal.exchange_heat(tank, 0.0, recovered_kwh=8.0, demand_kwh=5.0, hours=1.0)
    assert flows.delivered_kwh == 5.0
    assert flows.energy_after_kwh == 3.0
    assert flows.dumped_kwh == 0.0


def test_a_full_tank_dumps_the_surplus() -> None:
    tank = model.Tank(capacity_kwh=10, loss_per_hour=0.0)
    flows = thermal.exchange_heat(tank, 10.0, recovered_kwh=8.0, demand_kwh=2.0, hours=1.0)
    assert flows.dumped_kwh == pytest.approx(6.0)


def test_the_tank_covers_demand_when_compute_is_idle() -> None:
    tank = model.Tank(capacity_kwh=10, loss_per_hour=0.0)
    flows = thermal.exchange_heat(tank, 6.0, recovered_kwh=0.0, demand_kwh=4.0, hours=1.0)
    assert flows.delivered_kwh == 4.0
    assert flows.energy_after_kwh == 2.0


def test_standing_loss_compounds_per_hour() -> None:
    tank = model.Tank(capacity_kwh=100, loss_per_hour=0.1)
    assert thermal.standing_loss_kwh(tank, 100.0, 2.0) == pytest.approx(19.0)


def test_forecast_repeats_yesterday_and_never_sees_the_future() -> None:
    day = 86400.0
    # Two days of history: 10 kW in the first 12 h of each day, 0 after.
    kw = tuple(10.0 if (i * 3600 % day) < day / 2 else 0.0 for i in range(48))
    history = model.DemandSeries(start_s=0.0, step_s=3600.0, kw=kw)
    forecast = thermal.forecast_demand(history, 10.0, start_s=2 * day, step_s=3600.0, steps=24)
    assert forecast.kw[:12] == (10.0,) * 12
    assert forecast.kw[12:] == (0.0,) * 12
    # A history that runs into the future is not used beyond the present.
    leaky = model.DemandSeries(start_s=0.0, step_s=3600.0, kw=(99.0,) * 200)
    assert thermal.forecast_demand(leaky, 3.0, start_s=0.0, step_s=3600.0, steps=4).kw == (3.0,) * 4


def test_todays_deviation_carries_on_and_fades() -> None:
    day = 86400.0
    history = model.DemandSeries(start_s=0.0, step_s=3600.0, kw=(10.0,) * 48)
    forecast = thermal.forecast_demand(history, 16.0, start_s=2 * day, step_s=3600.0, steps=24)
    assert forecast.kw[0] == 16.0
    assert 10.0 < forecast.kw[3] < forecast.kw[1] < 16.0
    assert forecast.kw[23] == pytest.approx(10.0, abs=0.01)


def test_with_less_than_a_day_of_history_the_mean_is_the_base() -> None:
    history = model.DemandSeries(start_s=0.0, step_s=3600.0, kw=(0.0,) * 6 + (12.0,) * 6)
    forecast = thermal.forecast_demand(history, 12.0, start_s=12 * 3600.0, step_s=3600.0, steps=24)
    assert forecast.kw[0] == 12.0
    # 23:00 has no same-time sample yet: the mean of what was seen (6 kW), ...
    assert forecast.kw[11] == pytest.approx(6.0, abs=0.2)
    # ... 01:00 has one (0 kW at 01:00 yesterday).
    assert forecast.kw[13] == pytest.approx(0.0, abs=0.2)


def test_demand_is_capped_at_the_offtaker_rating() -> None:
    site = model.Site(
        name="a",
        capacity=model.Resources(),
        power=model.PowerModel(),
        heat_recovery_efficiency=0.9,
        tank=model.Tank(capacity_kwh=1),
        offtaker=model.Offtaker(kind=model.OfftakerKind.OFFICE, max_thermal_kw=20),
    )
    assert thermal.capped_demand_kw(site, 35.0) == 20.0
    assert thermal.capped_demand_kw(site, float("nan")) == 0.0
    assert thermal.capped_demand_kw(site, -3.0) == 0.0


@given(
    st.lists(st.floats(0, 100), min_size=1, max_size=20),
    st.floats(-1e6, 1e6),
    st.sampled_from([60.0, 900.0, 3600.0]),
    st.data(),
)
def test_a_demand_mean_over_whole_samples_weighs_each_equally(
    kw: list[float], start_s: float, step_s: float, data: st.DataObject
) -> None:
    series = model.DemandSeries(start_s=start_s, step_s=step_s, kw=tuple(kw))
    first = data.draw(st.integers(0, len(kw) - 1))
    count = data.draw(st.integers(1, len(kw) - first))
    t0 = start_s + first * step_s
    mean = series.mean_over(t0, t0 + count * step_s)
    assert mean == pytest.approx(sum(kw[first : first + count]) / count, rel=1e-9, abs=1e-9)
    half = series.mean_over(t0, t0 + step_s / 2)
    assert half == pytest.approx(kw[first], rel=1e-9, abs=1e-9)


# --- bounded by its inputs (issue 13) ------------------------------------------------------


def test_demand_series_with_a_1e_300_step_is_rejected_naming_the_bound() -> None:
    with pytest.raises(pydantic.ValidationError, match="a forecast's step must be between 1m"):
        model.DemandSeries(start_s=0.0, step_s=1e-300, kw=(1.0, 2.0))
    with pytest.raises(pydantic.ValidationError, match="a forecast's step"):
        model.DemandSeries(start_s=0.0, step_s=30.0, kw=(1.0,))
    with pytest.raises(pydantic.ValidationError, match="at most 10080 items"):
        model.DemandSeries(start_s=0.0, step_s=60.0, kw=(1.0,) * (bounds.MAX_SERIES_SAMPLES + 1))
    with pytest.raises(pydantic.ValidationError, match="finite number"):
        model.DemandSeries(start_s=0.0, step_s=60.0, kw=(math.inf,))


def test_mean_over_with_a_1e_300_step_ends_and_is_right() -> None:
    # Built without validation (as the simulator does): the walk used to step by 1e-300
    # from a time where that adds nothing, forever. Now it visits each sample once.
    series = model.DemandSeries.model_construct(start_s=1e6, step_s=1e-300, kw=(1.0, 2.0, 4.0))
    assert series.mean_over(1e6, 1e6 + 3600) == pytest.approx(4.0)  # after the end: the last
    assert series.mean_over(0.0, 1e6) == pytest.approx(1.0)  # before the start: the first


def test_mean_over_a_span_far_longer_than_the_series_takes_one_pass() -> None:
    series = model.DemandSeries(start_s=0.0, step_s=60.0, kw=(2.0, 4.0))
    # 1e15 s at 60 s steps would be 1.7e13 float steps; the halves outside are constants.
    mean = series.mean_over(-1e15, 1e15)
    assert mean == pytest.approx((2.0 * 1e15 + 2.0 * 60 + 4.0 * 60 + 4.0 * (1e15 - 120)) / 2e15)


def _reference_mean(series: model.DemandSeries, t0: float, t1: float) -> float:
    """Every piece of the time line with its value, summed without cleverness."""
    start, step, kw = series.start_s, series.step_s, series.kw
    pieces = [(-math.inf, start, kw[0])]
    pieces += [(start + i * step, start + (i + 1) * step, v) for i, v in enumerate(kw)]
    pieces.append((series.end_s, math.inf, kw[-1]))
    total = sum(v * max(0.0, min(b, t1) - max(a, t0)) for a, b, v in pieces)
    return total / (t1 - t0)


@given(
    st.lists(st.floats(0, 100), min_size=1, max_size=20),
    st.floats(-1e6, 1e6),
    st.sampled_from([60.0, 900.0, 3600.0]),
    st.floats(-2e5, 2e5),
    st.floats(1.0, 2e5),
)
def test_mean_over_any_interval_matches_the_plain_integral(
    kw: list[float], start_s: float, step_s: float, offset: float, length: float
) -> None:
    series = model.DemandSeries(start_s=start_s, step_s=step_s, kw=tuple(kw))
    t0 = start_s + offset
    expected = _reference_mean(series, t0, t0 + length)
    assert series.mean_over(t0, t0 + length) == pytest.approx(expected, rel=1e-6, abs=1e-6)
