"""Go-style duration strings ("90s", "1h30m", "1.5h") to and from seconds.

Pure. For every place a duration arrives as text: the HeatPolicy and LeafSite resources
(``heatshift.resources``), Job hints such as ``heatshift.dev/max-delay``, scenario files.
The grammar is Go's ``time.ParseDuration`` (which Kubernetes' CEL ``duration()`` also uses),
so a value the API server accepts parses to the same number here.
"""

from __future__ import annotations

import re

UNIT_SECONDS: dict[str, float] = {
    "ns": 1e-9,
    "us": 1e-6,
    "\u00b5s": 1e-6,  # micro sign; Go accepts it ...
    "\u03bcs": 1e-6,  # ... and the Greek letter mu
    "ms": 1e-3,
    "s": 1.0,
    "m": 60.0,
    "h": 3600.0,
}
"""Seconds per unit, for every unit Go's parser knows."""

_TERM = re.compile(
    "([0-9]*(?:\\.[0-9]*)?)(" + "|".join(sorted(UNIT_SECONDS, key=len, reverse=True)) + ")"
)

PATTERN = r"^([0-9]+(\.[0-9]+)?(ns|us|ms|s|m|h))+$"
"""What the CRDs accept for a duration: a strict, non-negative subset of the grammar that every
CEL implementation parses alike (so ``0s``, not Go's bare ``0``)."""


class DurationError(ValueError):
    """A string that is not a Go duration."""


def parse_duration(text: str) -> float:
    """Seconds in a Go duration string, e.g. ``"1h30m"`` -> 5400.0; ``"-5m"`` -> -300.0.

    Raises :class:`DurationError` for anything ``time.ParseDuration`` would reject
    (including a bare number other than ``"0"`` and an empty string).
    """
    s = text
    sign = 1.0
    if s[:1] in ("+", "-"):
        sign = -1.0 if s[0] == "-" else 1.0
        s = s[1:]
    if s == "0":
        return 0.0
    if not s:
        raise DurationError(f"invalid duration {text!r}")
    total = 0.0
    pos = 0
    while pos < len(s):
        m = _TERM.match(s, pos)
        if m is None or m.group(1) in ("", "."):
            raise DurationError(f"invalid duration {text!r}")
        total += float(m.group(1)) * UNIT_SECONDS[m.group(2)]
        pos = m.end()
    return sign * total


def format_duration(seconds: float) -> str:
    """The shortest Go duration string for a whole number of seconds: 5400 -> ``"1h30m"``."""
    whole = round(seconds)
    if whole == 0:
        return "0s"
    sign = "-" if whole < 0 else ""
    whole = abs(whole)
    hours, rest = divmod(whole, 3600)
    minutes, secs = divmod(rest, 60)
    parts = [
        f"{hours}h" if hours else "",
        f"{minutes}m" if minutes else "",
        f"{secs}s" if secs else "",
    ]
    return sign + "".join(parts)
