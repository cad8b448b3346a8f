"""The bounds on every input heatshift accepts, one place per concept.

Pure constants and checks, no I/O. Every edge that takes outside input reads its limits from
here, so the CRD schemas (CEL rules and OpenAPI ``maximum`` / ``maxLength``, generated from
:mod:`heatshift.resources`), the pydantic models, the metering readings, the Job hints, the
scenario files and the CLI agree on what is too long, too large or too fine:

- durations (:data:`PLANNING_HORIZON`, :data:`PLANNING_STEP`, :data:`MAX_DELAY`, ...): each a
  :class:`DurationRange` that checks seconds and writes the matching CEL rule;
- sizes: bytes of a metering response, samples of a series;
- physical numbers: finite and within what a leaf site can be;
- Kubernetes label keys and values, and URLs.

Why bounds at all: every one of them caps the work a single hostile or mistyped value can
cause (a horizon of 2,000,000 h, a forecast step of 1e-300 s, a start deadline in the year
13431) so that one bad object is rejected with a reason instead of stopping a planning cycle.
"""

from __future__ import annotations

import dataclasses
import math
import re

from heatshift import durations

MINUTE = 60.0
HOUR = 3600.0
DAY = 86400.0


@dataclasses.dataclass(frozen=True, slots=True)
class DurationRange:
    """An allowed range of a duration, in seconds: ``low < value`` (or ``<=``) ``<= high``."""

    what: str
    """What the duration is, in words ("the planning step")."""
    low_s: float
    high_s: float
    low_inclusive: bool = True

    @property
    def low(self) -> str:
        return _duration_text(self.low_s)

    @property
    def high(self) -> str:
        return _duration_text(self.high_s)

    def words(self) -> str:
        """The range in words, e.g. ``"between 1m and 24h"``."""
        if self.low_s == 0 and not self.low_inclusive:
            return f"longer than 0s and at most {self.high}"
        return f"between {self.low} and {self.high}"

    def problem(self, seconds: float) -> str | None:
        """None when ``seconds`` is allowed, else why not, in words."""
        if not math.isfinite(seconds):
            return f"{self.what} must be {self.words()}"
        too_low = seconds < self.low_s if self.low_inclusive else seconds <= self.low_s
        if too_low or seconds > self.high_s:
            return f"{self.what} must be {self.words()}, not {_duration_text(seconds)}"
        return None

    def check(self, seconds: float) -> float:
        """``seconds`` if allowed; raises ValueError saying why otherwise (for validators)."""
        why = self.problem(seconds)
        if why is not None:
            raise ValueError(why)
        return seconds

    def cel(self, field: str) -> tuple[str, str]:
        """The CEL rule (and its message) that enforces this range on a string ``field`` of
        ``self`` holding a Go duration, as the API server evaluates it."""
        d = f"duration(self.{field})"
        op = ">=" if self.low_inclusive else ">"
        rule = f"{d} {op} duration('{self.low}') && {d} <= duration('{self.high}')"
        return rule, f"{field} must be {self.words()}"


def _duration_text(seconds: float) -> str:
    if not math.isfinite(seconds) or abs(seconds) > 1e12:
        return "an unbounded time"
    if seconds != round(seconds):
        return f"{seconds:g}s"
    return durations.format_duration(seconds)


# --- durations -------------------------------------------------------------------------------

PLANNING_HORIZON = DurationRange("the planning horizon", 5 * MINUTE, 7 * DAY)
"""How far ahead a plan looks. A week covers every tank and demand cycle that matters; the
planner's work grows with it."""
PLANNING_STEP = DurationRange("the planning step", 1 * MINUTE, 24 * HOUR)
"""The length of a slot near now. Finer than a minute buys nothing (re-planning is slower)."""
REPLAN_INTERVAL = DurationRange("the re-plan interval", 10.0, 24 * HOUR)
SOLVER_TIME_LIMIT = DurationRange("the solver time limit", 0.0, 5 * MINUTE, low_inclusive=False)
MAX_DELAY = DurationRange("a maximum delay", 0.0, 30 * DAY)
"""How long a job may be held: an SLA class's ``maxDelay`` and the ``heatshift.dev/max-delay``
hint. No job is held longer than this, whatever its hints say."""
JOB_DURATION = DurationRange("a job's expected duration", 0.0, 90 * DAY, low_inclusive=False)
STALENESS_LIMIT = DurationRange("the staleness limit", 1.0, 24 * HOUR)
FORECAST_STEP = DurationRange("a forecast's step", 1 * MINUTE, 24 * HOUR)
"""The sample length of a metered demand forecast or history: no finer than the planner's
finest step, so a walk over samples is bounded by the horizon."""
SIMULATION_SPAN = DurationRange("a simulation's length", 1 * HOUR, 366 * DAY)
SIMULATION_STEP = DurationRange("a simulation's step", PLANNING_STEP.low_s, PLANNING_STEP.high_s)
"""A scenario's step: the simulated planner's step is a whole number of them, so the same
range as :data:`PLANNING_STEP`. A scenario has at most :data:`MAX_SERIES_SAMPLES` steps."""
METERING_TIMEOUT = DurationRange("a metering timeout", 0.0, 15.0, low_inclusive=False)
"""One metering source's whole request, connect to last byte. Below the planning cycle's own
limit for all metering together (``heatshift.kube.cycle.METERING_TIMEOUT_S``), so a slow source
fails on its own and never takes the other sites' readings with it."""

# --- sizes -----------------------------------------------------------------------------------

MAX_METERING_RESPONSE_BYTES = 4 * 1024 * 1024
"""Largest metering (HTTP or Prometheus) response body read; a bigger one is rejected."""
MAX_SERIES_SAMPLES = 10_080
"""Most samples in one demand forecast or history: a week of minutes."""
MAX_JOBS_PER_SCENARIO = 1_000_000
MAX_CSV_ROWS = 1_000_000
"""Most rows read from one CSV file of a scenario (a job trace or a demand series)."""
MAX_SITES = 10_000

# --- physical numbers ------------------------------------------------------------------------

MAX_JOB_POWER_WATTS = 1_000_000.0
"""One job drawing a megawatt is a typo (a unit slip), not a workload."""
MAX_SITE_POWER_WATTS = 100_000_000.0
"""Idle or per-device power of one leaf site: 100 MW is a large data centre, not a leaf site."""
MAX_THERMAL_KW = 100_000.0
"""An offtaker's heat demand or maximum intake, kW (a large district-heating loop)."""
MAX_TANK_CAPACITY_KWH = 1_000_000.0
MAX_TEMPERATURE_C = 200.0
MAX_REGISTER_KWH = 1e12
"""A cumulative meter register, kWh: a terawatt-hour, more than a leaf site meters in its life."""
MAX_BACKUP_EFFICIENCY = 6.0
"""Heat out per unit of fuel (or electricity) in: above 1 only for a heat pump (its COP)."""
MAX_EMISSION_FACTOR_KG_PER_KWH = 5.0
"""kg CO2 per kWh of fuel: every fuel and grid is well below (lignite is about 0.4)."""
MAX_PUE = 5.0
"""Total facility energy over IT energy: the worst data centres are near 3."""
MIN_TEMPERATURE_C = -50.0
MAX_FLOW_M3_PER_H = 10_000.0
MAX_OBJECTIVE_WEIGHT = 1_000_000.0
"""Objective weights are relative; past this the solver's integer coefficients overflow."""
MAX_PRIORITY = 10
"""A job's priority is 0 to 10 (an SLA class's, or a scenario job's)."""
MAX_CPU_CORES = 1_000_000.0
MAX_MEMORY_GIB = 100_000_000.0
MAX_GPUS = 100_000

MIN_TIMESTAMP_S = 946_684_800.0
"""2000-01-01T00:00:00Z: no reading, deadline or sample is older than this."""
MAX_TIMESTAMP_S = 4_102_444_800.0
"""2100-01-01T00:00:00Z: no reading, deadline or sample is later than this."""


def timestamp_problem(t_s: float, what: str) -> str | None:
    """None for a finite Unix time between 2000 and 2100, else why not, in words."""
    if not math.isfinite(t_s) or not MIN_TIMESTAMP_S <= t_s <= MAX_TIMESTAMP_S:
        return f"{what} must be a time between 2000 and 2100"
    return None


# --- Kubernetes names ------------------------------------------------------------------------

DNS_LABEL = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$"
DNS_SUBDOMAIN = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$"
LABEL_NAME = r"^([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]$"
"""The name part of a label key (at most 63 characters)."""
LABEL_KEY = (
    r"^([a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*/)?"
    r"([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]$"
)
"""A label key: an optional DNS-subdomain prefix and ``/``, then a name (Kubernetes'
qualified name). The lengths are :data:`LABEL_KEY_LENGTHS`."""
LABEL_KEY_LENGTHS = r"^([^/]{1,253}/)?[^/]{1,63}$"
"""The lengths of a label key's parts as a pattern (a prefix of at most 253 characters, a name
of at most 63), for schemas that cannot split a string, such as the CRDs' CEL rules."""
LABEL_VALUE = r"^(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?$"
"""A label value: empty, or at most 63 characters of the name alphabet."""
MAX_LABEL_KEY_LENGTH = 317
"""A 253-character prefix, the slash and a 63-character name."""
MAX_LABEL_VALUE_LENGTH = 63
LABEL_KEY_WORDS = (
    "an optional DNS prefix and '/', then at most 63 letters, digits, '-', '_' or '.', "
    "starting and ending with a letter or digit"
)
"""What a label key is, in words, for error messages."""
LABEL_VALUE_WORDS = (
    "at most 63 letters, digits, '-', '_' or '.', starting and ending with a letter or digit"
)

# fullmatch, not match: Python's ``$`` also matches before a final newline, the API server's
# (Go's) does not, and "a\n" must be refused by both.
_LABEL_KEY = re.compile(LABEL_KEY)
_LABEL_KEY_LENGTHS = re.compile(LABEL_KEY_LENGTHS)
_LABEL_VALUE = re.compile(LABEL_VALUE)


def label_key_problem(key: str) -> str | None:
    """None for a valid Kubernetes label key, else why not, in words."""
    if (
        len(key) > MAX_LABEL_KEY_LENGTH
        or not _LABEL_KEY.fullmatch(key)
        or not _LABEL_KEY_LENGTHS.fullmatch(key)
    ):
        return f"{key[:70]!r} is not a valid label key ({LABEL_KEY_WORDS})"
    return None


def label_value_problem(value: str) -> str | None:
    """None for a valid Kubernetes label value, else why not, in words."""
    if len(value) > MAX_LABEL_VALUE_LENGTH or not _LABEL_VALUE.fullmatch(value):
        return f"{value[:70]!r} is not a valid label value ({LABEL_VALUE_WORDS})"
    return None


# --- URLs ------------------------------------------------------------------------------------

HTTP_URL = (
    r"^https?://(\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9]([-A-Za-z0-9.]*[A-Za-z0-9])?)"
    r"(:[0-9]{1,5})?([/?#][!-~]*)?$"
)
"""An http(s) URL with a host (name, IPv4 or bracketed IPv6), an optional port and path, all
printable ASCII without spaces (anything else percent-encoded). ``http://?`` and ``http:///x``
do not match. ASCII by design: ``\\s`` would mean different things to the API server's regex
engine (ASCII) and to pydantic's (Unicode)."""
MAX_URL_LENGTH = 2048

_HTTP_URL = re.compile(HTTP_URL)


def url_problem(url: str) -> str | None:
    """None for an http(s) URL :data:`HTTP_URL` accepts, at most :data:`MAX_URL_LENGTH` long."""
    if len(url) > MAX_URL_LENGTH or not _HTTP_URL.fullmatch(url):
        shown = url if len(url) <= 70 else url[:67] + "..."
        return (
            f"{shown!r} is not an http:// or https:// URL with a host (at most "
            f"{MAX_URL_LENGTH} characters of printable ASCII, no spaces)"
        )
    return None
