"""Job hints: the ``heatshift.dev/*`` annotations a workload's owner may set, parsed safely.

Pure. :func:`parse_hints` reads a workload's annotations into :class:`Hints`; a value that
cannot be used is left out (so the HeatPolicy's SLA-class default applies) and reported as a
:class:`HintProblem` whose message names the annotation and says in plain words what is
wrong. Parsing never raises: a malformed hint must never drop or strand a job. The operator
turns each problem into a Warning Event on the workload.

Called by :mod:`heatshift.kube.snapshot` (and its tests).
"""

from __future__ import annotations

import dataclasses
import datetime
import math
import re
from collections.abc import Callable, Mapping
from typing import Any

from heatshift import bounds, durations

PREFIX = "heatshift.dev/"
DEADLINE = PREFIX + "deadline"
"""RFC 3339 time by which the job should have finished; it starts by this minus its duration."""
MAX_DELAY = PREFIX + "max-delay"
"""Longest the job may be held past submission, Go duration (``6h``)."""
EXPECTED_DURATION = PREFIX + "expected-duration"
"""How long the job runs, Go duration (``45m``)."""
POWER_WATTS = PREFIX + "power-watts"
"""The job's electrical power, W; overrides the site's power model."""
SITES = PREFIX + "sites"
"""Comma-separated LeafSite names the job may run at."""
SLA_CLASS = PREFIX + "sla-class"
"""Label (not annotation): the HeatPolicy SLA class the job belongs to."""

_SITE_NAME = re.compile(bounds.DNS_SUBDOMAIN)


@dataclasses.dataclass(frozen=True, slots=True)
class HintProblem:
    """A hint that was ignored, and why, in words for an Event."""

    annotation: str
    value: str
    message: str


@dataclasses.dataclass(frozen=True, slots=True)
class Hints:
    """The usable hints of one workload; None where absent or malformed."""

    deadline_s: float | None = None
    max_delay_s: float | None = None
    duration_s: float | None = None
    power_watts: float | None = None
    sites: frozenset[str] | None = None


def _shorten(value: str) -> str:
    return value if len(value) <= 64 else value[:61] + "..."


def _problem(annotation: str, value: str, what: str) -> HintProblem:
    return HintProblem(
        annotation=annotation,
        value=value,
        message=f"annotation {annotation}={_shorten(value)!r} ignored: {what}; "
        "the policy default applies",
    )


def _deadline(value: str) -> float | str:
    try:
        parsed = datetime.datetime.fromisoformat(value.strip())
    except ValueError:
        return "not an RFC 3339 time (e.g. 2026-01-31T18:00:00Z)"
    if parsed.tzinfo is None:
        return "the time has no time zone (add Z or an offset such as +01:00)"
    try:
        unix_s = parsed.timestamp()
    except (OverflowError, ValueError):  # year 1 with a negative offset, and the like
        unix_s = math.nan
    return bounds.timestamp_problem(unix_s, "the deadline") or unix_s


def _duration(value: str, allowed: bounds.DurationRange) -> float | str:
    try:
        seconds = durations.parse_duration(value.strip())
    except durations.DurationError:
        unsigned = value.strip().removeprefix("+")
        if re.match(durations.PATTERN, unsigned.removeprefix("-")) is None:
            return "not a duration (e.g. 90m, 6h or 1h30m)"
        # Well-formed but past Go's int64 nanoseconds (99999999h, 400 digits): too long.
        if unsigned.startswith("-"):
            return "the duration cannot be negative"
        return f"{allowed.what} must be {allowed.words()}"
    if seconds < 0:
        return "the duration cannot be negative"
    if seconds == 0 and not allowed.low_inclusive:
        return "the duration must be longer than zero"
    return allowed.problem(seconds) or seconds


def _power(value: str) -> float | str:
    try:
        watts = float(value.strip())
    except ValueError:
        return "not a number of watts (e.g. 350)"
    if math.isnan(watts) or math.isinf(watts):
        return "not a finite number"
    if watts < 0:
        return "power cannot be negative"
    if watts > bounds.MAX_JOB_POWER_WATTS:
        return f"more than {bounds.MAX_JOB_POWER_WATTS:.0f} W for one job is implausible"
    return watts


def _sites(value: str) -> frozenset[str] | str:
    names = [n.strip() for n in value.split(",") if n.strip()]
    if not names:
        return "the list of sites is empty"
    bad = [n for n in names if not _SITE_NAME.match(n)]
    if bad:
        return f"{_shorten(bad[0])!r} is not a valid LeafSite name"
    return frozenset(names)


def parse_hints(annotations: Mapping[str, str]) -> tuple[Hints, tuple[HintProblem, ...]]:
    """The workload's usable hints and the problems with the rest. Never raises."""
    problems: list[HintProblem] = []
    found: dict[str, Any] = {}
    parsers: tuple[tuple[str, str, Callable[[str], object]], ...] = (
        (DEADLINE, "deadline_s", _deadline),
        (MAX_DELAY, "max_delay_s", lambda v: _duration(v, bounds.MAX_DELAY)),
        (EXPECTED_DURATION, "duration_s", lambda v: _duration(v, bounds.JOB_DURATION)),
        (POWER_WATTS, "power_watts", _power),
        (SITES, "sites", _sites),
    )
    for annotation, field, parse in parsers:
        raw = annotations.get(annotation)
        if raw is None:
            continue
        value = parse(str(raw))
        if isinstance(value, str):
            problems.append(_problem(annotation, str(raw), value))
        else:
            found[field] = value
    return Hints(**found), tuple(problems)


def start_deadline(
    hints: Hints, *, submitted_s: float, duration_s: float, default_max_delay_s: float
) -> tuple[float, str]:
    """The latest start (Unix s) that keeps the job's SLA, and where it came from, in words.

    The earliest of the ``deadline`` hint minus the duration and the ``max-delay`` hint after
    submission; without either hint, the SLA class's maximum delay. Never before submission:
    a deadline already past means "start now". Never more than :data:`bounds.MAX_DELAY` after
    submission either, whatever the hints or the SLA class say: that cap is what keeps every
    start deadline a time the operator can plan, write and keep.
    """
    cap = submitted_s + bounds.MAX_DELAY.high_s
    candidates: list[tuple[float, str]] = [
        (cap, f"the longest hold heatshift allows ({bounds.MAX_DELAY.high})")
    ]
    if hints.deadline_s is not None:
        candidates.append((hints.deadline_s - duration_s, "its deadline annotation"))
    if hints.max_delay_s is not None:
        candidates.append((submitted_s + hints.max_delay_s, "its max-delay annotation"))
    if hints.deadline_s is None and hints.max_delay_s is None:
        candidates.append((submitted_s + default_max_delay_s, "its SLA class"))
    # NaN never compares smaller, so a non-finite candidate could otherwise win or hide.
    latest, source = min((c for c in candidates if math.isfinite(c[0])), key=lambda c: c[0])
    return max(latest, submitted_s), source
