"""Metering readings: their wire shape, their validation, and what the planner makes of them.

Owns three steps, all pure (no I/O, no clock: ``now_s`` is passed in):

1. The wire shape of the metering API (``openapi.yaml``) as TypedDicts: what a server sends
   and what a client receives, before anything is trusted.
2. :func:`validate_reading`: any JSON-like value in, a frozen :class:`SiteReading` or a
   :class:`Rejection` out. It never raises: missing, malformed, NaN, negative, out-of-range and
   stale values, and an offtaker that says it cannot take heat, each become a rejection with a
   machine ``kind`` and a message in plain words ("heat demand is NaN").
3. :func:`site_state_from`: a reading, or a rejection, into the planner's ``model.SiteState``.
   A rejected site plans as heat-unaware (its heat is worth 0): it is never blocked, it only
   stops attracting jobs for its heat.

Called by the metering sources (:mod:`heatshift.metering.http`,
:mod:`heatshift.metering.prometheus`), the reference server (for its payload types) and the
operator (which turns readings into a snapshot and rejections into conditions).

A tank given as temperatures is turned into energy relative to the return temperature, the
coldest water the building hands back, below which stored heat is of no use to it::

    E [kWh] = V [L] * 1 kg/L * 4.186 kJ/(kg K) * ((top + bottom) / 2 - return) / 3600

The mean of top and bottom assumes a linear stratification; a tank colder than the return
holds 0 kWh. Its capacity is then the configured one (a tank's temperatures do not tell it).
"""

from __future__ import annotations

import datetime
import enum
import json
import math
import re
from collections.abc import Mapping, Sequence
from typing import Literal, NotRequired, TypedDict

import pydantic
from pydantic import Field

from heatshift import bounds, model, thermal

WATER_HEAT_CAPACITY_KJ_PER_KG_K = 4.186
"""Specific heat capacity of water."""
WATER_DENSITY_KG_PER_L = 1.0
"""Close enough for a heating circuit: 0.98 at 60 °C, and the meter's volume is no finer."""
KJ_PER_KWH = 3600.0

DEMAND_TOLERANCE = 1.10
"""A demand up to 10% above the offtaker's rating is meter noise and is capped; beyond it the
reading is out of range (a wrong unit, a wrong site, a broken meter)."""
TANK_TOLERANCE = 1.05
"""Tank energy up to 5% above the LeafSite's configured capacity is rounding in the meter and
is capped; beyond it the reading is out of range (whatever capacity the meter claims)."""
DEFAULT_CLOCK_SKEW_S = 60.0
"""How far in the future an observation time may lie before it is out of range."""

RFC3339 = (
    r"^[0-9]{4}-[0-9]{2}-[0-9]{2}[Tt][0-9]{2}:[0-9]{2}:[0-9]{2}(\.[0-9]{1,9})?"
    r"([Zz]|[+-][0-9]{2}:[0-9]{2})$"
)
"""RFC 3339's date-time (section 5.6), as ``openapi.yaml`` states it. Python's
``fromisoformat`` also takes ISO 8601's basic form (``20261202T013228+0000``), a space or a
comma; the contract does not, so neither do we."""
_RFC3339 = re.compile(RFC3339)
_JSON_CONTENT_TYPE = re.compile(r"^application/([A-Za-z0-9.!#$&^_-]+\+)?json$")


# --- the wire shape (see openapi.yaml) --------------------------------------------------------


class TankEnergyPayload(TypedDict):
    """Tank state as the energy stored in it."""

    energyKWh: float
    capacityKWh: NotRequired[float]


class TankTemperaturePayload(TypedDict):
    """Tank state as the temperatures of a stratified tank and its volume."""

    topTempC: float
    bottomTempC: float
    volumeL: float


class ForecastPayload(TypedDict):
    """Heat demand ahead: ``demandKW[i]`` holds from ``start + i * stepSeconds``."""

    start: str
    stepSeconds: float
    demandKW: list[float]


class RegistersPayload(TypedDict):
    """A heat meter's cumulative registers (EN 1434 / MID style): they only ever grow, but
    for a reset to 0 or a new meter (another ``meterId``)."""

    heatDeliveredKWh: float
    meterId: NotRequired[str]
    observedAt: NotRequired[str]
    itEnergyKWh: NotRequired[float]
    heatDumpedKWh: NotRequired[float]


class ReadingPayload(TypedDict):
    """One site's reading, as ``GET /v1/sites/{siteId}/reading`` returns it."""

    siteId: str
    observedAt: str
    heatDemandKW: float
    tank: TankEnergyPayload | TankTemperaturePayload
    supplyTempC: float
    returnTempC: float
    offtakerAvailable: bool
    forecast: NotRequired[ForecastPayload]
    flowM3PerH: NotRequired[float]
    registers: NotRequired[RegistersPayload]


class SiteErrorPayload(TypedDict):
    """Why one site has no reading in ``GET /v1/readings``."""

    siteId: str
    code: str
    message: str


class ReadingListPayload(TypedDict):
    """``GET /v1/readings``: every site's reading, and the sites that have none now."""

    readings: list[ReadingPayload]
    unavailable: NotRequired[list[SiteErrorPayload]]


class SiteListPayload(TypedDict):
    """``GET /v1/sites``: the site ids the API knows."""

    sites: list[str]


class ErrorPayload(TypedDict):
    """The body of every error response."""

    code: str
    message: str


# --- validated, in domain terms ---------------------------------------------------------------


class RejectionKind(enum.StrEnum):
    """Why a reading was not used, for machines (metrics labels, condition reasons)."""

    MISSING = "missing"
    NAN = "nan"
    NEGATIVE = "negative"
    OUT_OF_RANGE = "out_of_range"
    STALE = "stale"
    MALFORMED = "malformed"
    UNAVAILABLE = "unavailable"
    BACKWARDS = "backwards"
    JUMP = "jump"


_CONDITION_REASONS = {
    RejectionKind.MISSING: "ReadingMissing",
    RejectionKind.NAN: "ReadingNaN",
    RejectionKind.NEGATIVE: "ReadingNegative",
    RejectionKind.OUT_OF_RANGE: "ReadingOutOfRange",
    RejectionKind.STALE: "ReadingStale",
    RejectionKind.MALFORMED: "ReadingMalformed",
    RejectionKind.UNAVAILABLE: "MeteringUnavailable",
    RejectionKind.BACKWARDS: "RegisterBackwards",
    RejectionKind.JUMP: "RegisterJump",
}


class Rejection(model.Frozen):
    """A site without a usable reading, and why."""

    site: str = Field(description="The site id the reading was asked for (may be empty).")
    kind: RejectionKind
    message: str = Field(description="What is wrong, in plain words.")

    @property
    def condition_reason(self) -> str:
        """The CamelCase reason for a Kubernetes condition, e.g. ``ReadingStale``."""
        return _CONDITION_REASONS[self.kind]


class ReadingLimits(model.Frozen):
    """What a site's readings are checked against: its configuration, not the meter's word."""

    staleness_limit_s: float = Field(gt=0.0, description="Oldest acceptable reading, seconds.")
    max_thermal_kw: float = Field(gt=0.0, description="The offtaker's rating, kW.")
    tank_capacity_kwh: float = Field(ge=0.0, description="The configured tank capacity, kWh.")
    max_clock_skew_s: float = Field(
        default=DEFAULT_CLOCK_SKEW_S, ge=0.0, description="How far ahead observedAt may be."
    )

    @classmethod
    def for_site(cls, site: model.Site, staleness_limit_s: float) -> ReadingLimits:
        """The limits of a configured site."""
        return cls(
            staleness_limit_s=staleness_limit_s,
            max_thermal_kw=site.offtaker.max_thermal_kw,
            tank_capacity_kwh=site.tank.capacity_kwh,
        )


class Registers(model.Frozen):
    """A meter's cumulative registers, validated one by one (finite, not negative, within
    :data:`heatshift.bounds.MAX_REGISTER_KWH`). Whether they moved plausibly since the last
    reading is the ledger's check (:mod:`heatshift.ledger`), which knows the last reading."""

    meter_id: str | None = Field(default=None, description="The meter's identity, if given.")
    observed_at_s: float = Field(description="When the registers were read, Unix seconds.")
    heat_delivered_kwh: float = Field(ge=0.0, description="Delivered heat register, kWh.")
    it_energy_kwh: float | None = Field(default=None, ge=0.0, description="IT energy, kWh.")
    heat_dumped_kwh: float | None = Field(default=None, ge=0.0, description="Dumped, kWh.")


class SiteReading(model.Frozen):
    """A validated reading. Values are as measured (within tolerance), not yet capped."""

    site: str
    observed_at_s: float = Field(description="When it was measured, Unix seconds.")
    demand_kw: float = Field(ge=0.0, description="Heat the offtaker would take now, kW.")
    tank_energy_kwh: float = Field(ge=0.0, description="Usable energy in the tank, kWh.")
    tank_capacity_kwh: float = Field(
        ge=0.0, description="As the meter reports it, else as configured, kWh."
    )
    tank_source: Literal["energy", "temperatures"] = Field(
        description="Whether the meter gave the energy or temperatures it was derived from."
    )
    supply_temp_c: float | None = Field(default=None, description="Supply temperature, °C.")
    return_temp_c: float | None = Field(default=None, description="Return temperature, °C.")
    offtaker_available: bool = True
    forecast: model.DemandSeries | None = Field(
        default=None, description="Demand ahead on the Unix clock, if the meter gave a valid one."
    )
    warnings: tuple[str, ...] = Field(
        default=(), description="Things that did not reject the reading, e.g. a dropped forecast."
    )
    flow_m3_per_h: float | None = Field(
        default=None, ge=0.0, description="Water flow through the heat meter, m³/h."
    )
    registers: Registers | None = Field(
        default=None, description="The meter's cumulative registers, if it has them."
    )
    registers_rejection: Rejection | None = Field(
        default=None,
        description="Why the registers were dropped (the rest of the reading stays usable).",
    )


ReadingResult = SiteReading | Rejection
"""What a source returns per site."""


def tank_energy_from_temperatures(
    top_temp_c: float, bottom_temp_c: float, volume_l: float, return_temp_c: float
) -> float:
    """Usable energy (kWh) of a stratified tank, relative to the return temperature.

    ``volume * density * c_p * (mean tank temperature - return temperature)``, with the mean
    of top and bottom as the tank's temperature; never below 0.
    """
    mean_c = (top_temp_c + bottom_temp_c) / 2.0
    delta_k = max(0.0, mean_c - return_temp_c)
    kj = volume_l * WATER_DENSITY_KG_PER_L * WATER_HEAT_CAPACITY_KJ_PER_KG_K * delta_k
    return kj / KJ_PER_KWH


def parse_time(text: str) -> float:
    """Unix seconds of an RFC 3339 time between 2000 and 2100. Raises ValueError naming what
    is wrong."""
    if not _RFC3339.match(text):
        if re.match(r"^[0-9]{4}-[0-9]{2}-[0-9]{2}[Tt][0-9:.]+$", text):
            raise ValueError(f"{text[:64]!r} has no time zone offset")
        raise ValueError(f"{text[:64]!r} is not an RFC 3339 time")
    # fromisoformat takes at most 6 fraction digits in Python 3.11; RFC 3339 allows more.
    iso = text.upper().replace("Z", "+00:00")
    head, dot, rest = iso.partition(".")
    if dot:
        digits = len(rest) - len(rest.lstrip("0123456789"))
        iso = f"{head}.{rest[: min(digits, 6)]}{rest[digits:]}"
    try:
        parsed = datetime.datetime.fromisoformat(iso)
        seconds = parsed.timestamp()
    except (OverflowError, OSError, ValueError):
        raise ValueError(f"{text[:64]!r} is not a valid date and time") from None
    why = bounds.timestamp_problem(seconds, "it")
    if why is not None:
        raise ValueError(f"{text[:64]!r} is out of range: {why}")
    return seconds


def format_time(unix_s: float) -> str:
    """RFC 3339 in UTC with a ``Z``, to the microsecond."""
    when = datetime.datetime.fromtimestamp(unix_s, tz=datetime.UTC)
    return when.isoformat(timespec="microseconds").replace("+00:00", "Z")


# --- decoding ---------------------------------------------------------------------------------


class BodyError(ValueError):
    """A response body that is not the contract's JSON; the message says why, in words."""


class _DuplicateKey(ValueError):
    def __init__(self, key: str) -> None:
        super().__init__(key)
        self.key = key


def _unique_keys(pairs: list[tuple[str, object]]) -> dict[str, object]:
    obj = dict(pairs)
    if len(obj) != len(pairs):
        seen: set[str] = set()
        for key, _ in pairs:
            if key in seen:
                raise _DuplicateKey(key)
            seen.add(key)
    return obj


def json_content_type_problem(content_type: str | None) -> str | None:
    """None for a JSON media type (``application/json`` or ``application/...+json``, UTF-8 if
    a charset is given), else what is wrong with it, in words."""
    if not content_type:
        return "has no content type (expected application/json)"
    media, _, params = content_type.partition(";")
    media = media.strip().lower()
    if not _JSON_CONTENT_TYPE.match(media):
        return f"has content type {media[:60]!r}, not application/json"
    for param in params.split(";"):
        name, _, value = param.partition("=")
        charset = value.strip().strip('"').lower()
        if name.strip().lower() == "charset" and charset not in ("utf-8", "utf8"):
            return f"is in charset {charset[:20]!r}, not UTF-8"
    return None


def decode_json(body: bytes, content_type: str | None) -> object:
    """The JSON value of a response body, strictly: a JSON content type, UTF-8 without a byte
    order mark (``json.loads`` would guess UTF-16 or UTF-32), and no key twice in an object
    (``json.loads`` would keep the last). Raises :class:`BodyError` saying what is wrong.

    The tokens ``NaN`` and ``Infinity`` are decoded (to floats that validation then rejects
    with their own words), as are numbers too large for a float (to infinity)."""
    why = json_content_type_problem(content_type)
    if why is not None:
        raise BodyError(f"it {why}")
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError as err:
        raise BodyError(f"it is not UTF-8 (bad byte at offset {err.start})") from None
    if text.startswith("\ufeff"):
        raise BodyError("it starts with a byte order mark")
    try:
        return json.loads(text, object_pairs_hook=_unique_keys)
    except _DuplicateKey as dup:
        raise BodyError(f"it has the key {dup.key[:64]!r} twice in one object") from None
    except RecursionError:
        raise BodyError("it is nested too deeply") from None
    except ValueError as err:
        raise BodyError(f"it is not valid JSON ({str(err)[:120]})") from None


# --- validation -------------------------------------------------------------------------------


class _Reject(Exception):
    """Internal: one problem with a reading; :func:`validate_reading` turns it into data."""

    def __init__(self, kind: RejectionKind, message: str) -> None:
        super().__init__(message)
        self.kind = kind
        self.message = message


def _num(x: float) -> str:
    """A number for a message: ``95``, ``95.25``, ``1.2e+07``."""
    if abs(x) >= 1e6:
        return f"{x:.3g}"
    return f"{x:.2f}".rstrip("0").rstrip(".") or "0"


def _duration_words(seconds: float) -> str:
    """``45 s``, ``14 min``, ``3.5 h``, ``2.1 days``."""
    if seconds < 120:
        return f"{seconds:.0f} s"
    if seconds < 2 * 3600:
        return f"{seconds / 60:.0f} min"
    if seconds < 2 * 86400:
        return f"{_num(round(seconds / 3600, 1))} h"
    return f"{_num(round(seconds / 86400, 1))} days"


def _json_kind(value: object) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, str):
        return f"the text {value[:40]!r}"
    if isinstance(value, Mapping):
        return "an object"
    if isinstance(value, Sequence):
        return "a list"
    if isinstance(value, int | float):
        return "a number"
    return type(value).__name__


def _get(obj: Mapping[object, object], key: str, label: str) -> object:
    value = obj.get(key)
    if value is None:
        raise _Reject(RejectionKind.MISSING, f"{label} is missing ({key})")
    return value


def _number(value: object, label: str) -> float:
    """A finite float, or the rejection saying why not."""
    # bool is an int in Python; in JSON it is not a number.
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise _Reject(RejectionKind.MALFORMED, f"{label} is not a number (got {_json_kind(value)})")
    try:
        x = float(value)
    except OverflowError:  # a JSON integer with hundreds of digits
        raise _Reject(RejectionKind.OUT_OF_RANGE, f"{label} is too large") from None
    if math.isnan(x):
        raise _Reject(RejectionKind.NAN, f"{label} is NaN")
    if math.isinf(x):
        raise _Reject(RejectionKind.NAN, f"{label} is infinite")
    return x


def _amount(value: object, label: str, unit: str) -> float:
    """A finite, non-negative float."""
    x = _number(value, label)
    if x < 0.0:
        raise _Reject(RejectionKind.NEGATIVE, f"{label} is negative ({_num(x)} {unit})")
    return x


def _temperature(value: object, label: str) -> float:
    x = _number(value, label)
    low, high = bounds.MIN_TEMPERATURE_C, bounds.MAX_TEMPERATURE_C
    if not low <= x <= high:
        raise _Reject(
            RejectionKind.OUT_OF_RANGE,
            f"{label} {_num(x)} °C is outside {_num(low)}..{_num(high)} °C",
        )
    return x


def _optional_temperature(obj: Mapping[object, object], key: str, label: str) -> float | None:
    # Temperatures inform people, not the planner: a meter without them is still usable.
    value = obj.get(key)
    return None if value is None else _temperature(value, label)


def _time(value: object, label: str) -> float:
    if not isinstance(value, str):
        raise _Reject(RejectionKind.MALFORMED, f"{label} is not a string (got {_json_kind(value)})")
    try:
        return parse_time(value)
    except ValueError as err:
        raise _Reject(RejectionKind.MALFORMED, f"{label} {err}") from None


def _check_fresh(observed_s: float, now_s: float, limits: ReadingLimits) -> None:
    age = now_s - observed_s
    if age > limits.staleness_limit_s:
        age_words = _duration_words(age)
        limit_words = _duration_words(limits.staleness_limit_s)
        if age_words == limit_words:  # "10 min old, limit 10 min" would read as no problem
            age_words, limit_words = f"{age:.0f} s", f"{limits.staleness_limit_s:.0f} s"
        raise _Reject(RejectionKind.STALE, f"reading is {age_words} old, limit {limit_words}")
    if -age > limits.max_clock_skew_s:
        raise _Reject(
            RejectionKind.OUT_OF_RANGE,
            f"reading is dated {_duration_words(-age)} in the future "
            f"(clock skew? limit {_duration_words(limits.max_clock_skew_s)})",
        )


def _tank(
    raw: object, return_temp_c: float | None, limits: ReadingLimits, warnings: list[str]
) -> tuple[float, float, Literal["energy", "temperatures"]]:
    """(energy, capacity, source) of the tank, checked against the configured capacity."""
    if not isinstance(raw, Mapping):
        raise _Reject(RejectionKind.MALFORMED, f"tank is not an object (got {_json_kind(raw)})")
    source: Literal["energy", "temperatures"]
    # Both forms present: the energy is the meter's own figure, prefer it over our derivation.
    if raw.get("energyKWh") is not None:
        source = "energy"
        energy = _amount(raw["energyKWh"], "tank energy", "kWh")
        capacity = limits.tank_capacity_kwh
        reported = raw.get("capacityKWh")
        if reported is not None:
            capacity = _amount(reported, "tank capacity", "kWh")
            if capacity > limits.tank_capacity_kwh * TANK_TOLERANCE:
                warnings.append(
                    f"meter reports tank capacity {_num(capacity)} kWh, configured "
                    f"{_num(limits.tank_capacity_kwh)} kWh; planning uses the configured one"
                )
        where = ""
    elif any(raw.get(k) is not None for k in ("topTempC", "bottomTempC", "volumeL")):
        source = "temperatures"
        top = _temperature(_get(raw, "topTempC", "tank top temperature"), "tank top temperature")
        bottom = _temperature(
            _get(raw, "bottomTempC", "tank bottom temperature"), "tank bottom temperature"
        )
        volume = _amount(_get(raw, "volumeL", "tank volume"), "tank volume", "L")
        if return_temp_c is None:
            raise _Reject(
                RejectionKind.MISSING,
                "return temperature is missing (returnTempC), and the tank is given as "
                "temperatures, which need it",
            )
        energy = tank_energy_from_temperatures(top, bottom, volume, return_temp_c)
        capacity = limits.tank_capacity_kwh
        where = " (from temperatures)"
    else:
        raise _Reject(
            RejectionKind.MISSING,
            "tank state is missing (neither energyKWh nor topTempC, bottomTempC and volumeL)",
        )
    # The configured capacity bounds the energy whatever the meter claims its capacity is: a
    # meter saying "1000 kWh of 1000" on an 80 kWh tank is a wrong site or a wrong unit.
    bound = min(capacity, limits.tank_capacity_kwh)
    if energy > bound * TANK_TOLERANCE:
        claim = f" (the LeafSite's; the meter claims {_num(capacity)} kWh)"
        if bound == capacity:
            claim = ""
        raise _Reject(
            RejectionKind.OUT_OF_RANGE,
            f"tank energy {_num(energy)} kWh{where} exceeds capacity {_num(bound)} kWh{claim}",
        )
    return energy, capacity, source


def _forecast(raw: object, limits: ReadingLimits) -> model.DemandSeries:
    """A meter's demand forecast, within :mod:`heatshift.bounds`: its step within
    ``FORECAST_STEP``, at most ``MAX_SERIES_SAMPLES`` finite, non-negative values within the
    offtaker's rating, from a start to an end between 2000 and 2100."""
    if not isinstance(raw, Mapping):
        raise _Reject(RejectionKind.MALFORMED, f"it is not an object (got {_json_kind(raw)})")
    start = _time(_get(raw, "start", "its start"), "its start")
    step = _number(_get(raw, "stepSeconds", "its step"), "its step")
    # A step of 1e-300 s would make every walk over the series endless (t + step == t).
    why = bounds.FORECAST_STEP.problem(step)
    if why is not None:
        raise _Reject(RejectionKind.OUT_OF_RANGE, why)
    values = _get(raw, "demandKW", "its demand")
    if isinstance(values, str | bytes) or not isinstance(values, Sequence):
        raise _Reject(
            RejectionKind.MALFORMED, f"its demandKW is not a list (got {_json_kind(values)})"
        )
    if not values:
        raise _Reject(RejectionKind.MISSING, "it has no values")
    if len(values) > bounds.MAX_SERIES_SAMPLES:
        raise _Reject(
            RejectionKind.OUT_OF_RANGE,
            f"it has {len(values)} values, more than {bounds.MAX_SERIES_SAMPLES}",
        )
    why = bounds.timestamp_problem(start + len(values) * step, "its end")
    if why is not None:
        raise _Reject(RejectionKind.OUT_OF_RANGE, why)
    kw: list[float] = []
    limit = limits.max_thermal_kw * DEMAND_TOLERANCE
    for i, value in enumerate(values):
        x = _amount(value, f"demandKW[{i}]", "kW")
        if x > limit:
            raise _Reject(
                RejectionKind.OUT_OF_RANGE,
                f"demandKW[{i}] {_num(x)} kW exceeds the offtaker's rating "
                f"{_num(limits.max_thermal_kw)} kW",
            )
        kw.append(x)
    try:
        return model.DemandSeries(start_s=start, step_s=step, kw=tuple(kw))
    except pydantic.ValidationError as err:  # the model's bounds (step, length, start)
        raise _Reject(RejectionKind.OUT_OF_RANGE, model.validation_reason(err)) from None


def _register(raw: Mapping[object, object], key: str, label: str) -> float | None:
    value = raw.get(key)
    if value is None:
        return None
    x = _amount(value, label, "kWh")
    if x > bounds.MAX_REGISTER_KWH:
        raise _Reject(
            RejectionKind.OUT_OF_RANGE,
            f"{label} {_num(x)} kWh exceeds {_num(bounds.MAX_REGISTER_KWH)} kWh",
        )
    return x


def _registers(raw: object, observed_s: float, limits: ReadingLimits, now_s: float) -> Registers:
    """A meter's registers, each checked on its own; their own read time, if given, is
    checked for staleness like a reading's."""
    if not isinstance(raw, Mapping):
        raise _Reject(
            RejectionKind.MALFORMED, f"registers is not an object (got {_json_kind(raw)})"
        )
    meter_id = raw.get("meterId")
    if meter_id is not None and (not isinstance(meter_id, str) or not 0 < len(meter_id) <= 253):
        raise _Reject(RejectionKind.MALFORMED, "meter id is not a string of 1 to 253 characters")
    read_s = observed_s
    if raw.get("observedAt") is not None:
        read_s = _time(raw["observedAt"], "register read time")
        _check_fresh(read_s, now_s, limits)
    delivered = _register(raw, "heatDeliveredKWh", "delivered heat register")
    if delivered is None:
        raise _Reject(
            RejectionKind.MISSING, "delivered heat register is missing (heatDeliveredKWh)"
        )
    return Registers(
        meter_id=meter_id,
        observed_at_s=read_s,
        heat_delivered_kwh=delivered,
        it_energy_kwh=_register(raw, "itEnergyKWh", "IT energy register"),
        heat_dumped_kwh=_register(raw, "heatDumpedKWh", "dumped heat register"),
    )


def validate_reading(
    raw: object,
    *,
    now_s: float,
    staleness_limit_s: float,
    max_thermal_kw: float,
    tank_capacity_kwh: float,
    site: str | None = None,
    max_clock_skew_s: float = DEFAULT_CLOCK_SKEW_S,
) -> SiteReading | Rejection:
    """Check one raw reading (any JSON-like value) against a site's configuration.

    ``site`` is the id the reading was asked for: a reading for another site is malformed.
    Returns the first problem found as a :class:`Rejection`; never raises for any ``raw``
    (invalid limits, a configuration error, raise pydantic's ValidationError).
    """
    limits = ReadingLimits(
        staleness_limit_s=staleness_limit_s,
        max_thermal_kw=max_thermal_kw,
        tank_capacity_kwh=tank_capacity_kwh,
        max_clock_skew_s=max_clock_skew_s,
    )
    return validate_with(raw, limits, now_s=now_s, site=site)


def validate_with(
    raw: object, limits: ReadingLimits, *, now_s: float, site: str | None = None
) -> SiteReading | Rejection:
    """:func:`validate_reading` with the limits as one object (what the sources hold)."""
    name = site or ""
    try:
        if not isinstance(raw, Mapping):
            raise _Reject(
                RejectionKind.MALFORMED, f"reading is not a JSON object (got {_json_kind(raw)})"
            )
        site_id = _get(raw, "siteId", "site id")
        if not isinstance(site_id, str):
            raise _Reject(
                RejectionKind.MALFORMED, f"site id is not a string (got {_json_kind(site_id)})"
            )
        if site is None:
            name = site_id
        elif site_id != site:
            raise _Reject(
                RejectionKind.MALFORMED, f"reading is for site {site_id[:64]!r}, not {site!r}"
            )
        observed_s = _time(_get(raw, "observedAt", "observation time"), "observation time")
        # A stale reading is stale whatever its values say: report the root cause first.
        _check_fresh(observed_s, now_s, limits)
        demand = _amount(_get(raw, "heatDemandKW", "heat demand"), "heat demand", "kW")
        if demand > limits.max_thermal_kw * DEMAND_TOLERANCE:
            raise _Reject(
                RejectionKind.OUT_OF_RANGE,
                f"heat demand {_num(demand)} kW exceeds the offtaker's rating "
                f"{_num(limits.max_thermal_kw)} kW",
            )
        supply = _optional_temperature(raw, "supplyTempC", "supply temperature")
        ret = _optional_temperature(raw, "returnTempC", "return temperature")
        warnings: list[str] = []
        energy, capacity, tank_source = _tank(
            _get(raw, "tank", "tank state"), ret, limits, warnings
        )
        available = _get(raw, "offtakerAvailable", "offtaker availability")
        if not isinstance(available, bool):
            raise _Reject(
                RejectionKind.MALFORMED,
                f"offtaker availability is not true or false (got {_json_kind(available)})",
            )
        if not available:
            raise _Reject(RejectionKind.UNAVAILABLE, "offtaker reports it cannot take heat now")
        forecast: model.DemandSeries | None = None
        raw_forecast = raw.get("forecast")
        if raw_forecast is not None:
            # A bad forecast costs the forecast, not the reading: the planner has its own.
            try:
                forecast = _forecast(raw_forecast, limits)
            except _Reject as bad:
                warnings.append(f"forecast dropped: {bad.message}")
        flow: float | None = None
        if raw.get("flowM3PerH") is not None:
            flow = _amount(raw["flowM3PerH"], "flow", "m³/h")
        registers: Registers | None = None
        registers_rejection: Rejection | None = None
        if raw.get("registers") is not None:
            # Bad registers cost the ledger its metered figures, not the planner its reading.
            try:
                registers = _registers(raw["registers"], observed_s, limits, now_s)
            except _Reject as bad:
                registers_rejection = Rejection(site=name, kind=bad.kind, message=bad.message)
        return SiteReading(
            flow_m3_per_h=flow,
            registers=registers,
            registers_rejection=registers_rejection,
            site=name,
            observed_at_s=observed_s,
            demand_kw=demand,
            tank_energy_kwh=energy,
            tank_capacity_kwh=capacity,
            tank_source=tank_source,
            supply_temp_c=supply,
            return_temp_c=ret,
            offtaker_available=available,
            forecast=forecast,
            warnings=tuple(warnings),
        )
    except _Reject as problem:
        return Rejection(site=name, kind=problem.kind, message=problem.message)


def site_state_from(
    result: SiteReading | Rejection,
    site: model.Site,
    *,
    history: model.DemandSeries | None = None,
    fallback_tank_kwh: float = 0.0,
) -> model.SiteState:
    """The planner's view of ``site`` given its latest reading (or why there is none).

    A reading is capped to the site's configuration (demand at the offtaker's rating, energy
    at the tank's capacity), inside the tolerances validation allowed. A rejection gives a
    heat-unaware state: no demand, ``fallback_tank_kwh`` (e.g. the last known energy) in the
    tank, and the rejection's message as the reason.
    """
    capacity = site.tank.capacity_kwh
    if isinstance(result, Rejection):
        return model.SiteState(
            site=site.name,
            tank_energy_kwh=min(max(fallback_tank_kwh, 0.0), capacity),
            demand_kw=0.0,
            demand_history=history,
            heat_aware=False,
            reason=f"metering reading rejected ({result.kind}): {result.message}",
        )
    return model.SiteState(
        site=site.name,
        tank_energy_kwh=min(result.tank_energy_kwh, capacity),
        demand_kw=thermal.capped_demand_kw(site, result.demand_kw),
        demand_history=history,
        demand_forecast=result.forecast,
        heat_aware=True,
    )
