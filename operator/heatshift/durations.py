"""Go-style duration strings ("90s", "1h30m", "1.5h") to and from seconds.

Pure. For every place a duration arrives as text: the HeatPolicy and LeafSite resources
(``heatshift.resources``), Job hints such as ``heatshift.dev/max-delay``, scenario files.
The grammar is Go's ``time.ParseDuration`` (which Kubernetes' CEL ``duration()`` also uses),
so a value the API server accepts parses to the same number here.
"""

from __future__ import annotations

import re

NANOSECONDS: dict[str, int] = {
    "ns": 1,
    "us": 1_000,
    "\u00b5s": 1_000,
    "\u03bcs": 1_000,
    "ms": 1_000_000,
    "s": 1_000_000_000,
    "m": 60_000_000_000,
    "h": 3_600_000_000_000,
}
"""Nanoseconds per unit: Go counts a duration in whole nanoseconds."""

_TERM = re.compile(
    "([0-9]*(?:\\.[0-9]*)?)(" + "|".join(sorted(NANOSECONDS, key=len, reverse=True)) + ")"
)

PATTERN = r"^([0-9]+(\.[0-9]+)?(ns|us|ms|s|m|h))+$"
"""What the CRDs accept for a duration: a strict, non-negative subset of the grammar that every
CEL implementation parses alike (so ``0s``, not Go's bare ``0``)."""


class DurationError(ValueError):
    """A string that is not a Go duration (or one too long for Go's int64 nanoseconds)."""


MAX_NANOSECONDS = 2**63 - 1
"""Go's longest duration (about 2,562,047 hours); CEL's ``duration()`` rejects longer ones."""


def parse_duration(text: str) -> float:
    """Seconds in a Go duration string, e.g. ``"1h30m"`` -> 5400.0; ``"-5m"`` -> -300.0.

    Exactly as Go's ``time.ParseDuration`` (and so CEL's ``duration()``) reads it: whole
    nanoseconds, a fraction below one nanosecond dropped (``"0.5ns"`` is 0), and a value past
    Go's int64 range rejected rather than turned into a huge float or infinity. Raises
    :class:`DurationError` for anything Go would reject (including a bare number other than
    ``"0"`` and an empty string).
    """
    shown = text if len(text) <= 40 else text[:37] + "..."
    s = text
    negative = False
    if s[:1] in ("+", "-"):
        negative = s[0] == "-"
        s = s[1:]
    if s == "0":
        return 0.0
    if not s:
        raise DurationError(f"invalid duration {shown!r}")
    total = 0
    pos = 0
    while pos < len(s):
        m = _TERM.match(s, pos)
        if m is None or m.group(1) in ("", "."):
            raise DurationError(f"invalid duration {shown!r}")
        whole, _, fraction = m.group(1).partition(".")
        unit = NANOSECONDS[m.group(2)]
        # More than 20 digits overflows int64 whatever the unit; also keeps int() cheap.
        whole, fraction = whole.lstrip("0"), fraction[:20]
        if len(whole) > 20:
            total = MAX_NANOSECONDS + 1
        else:
            total += int(whole or "0") * unit
        if fraction:
            # Integer arithmetic: no float rounding, and Go also truncates.
            total += int(fraction) * unit // 10 ** len(fraction)
        if total > MAX_NANOSECONDS:
            raise DurationError(f"invalid duration {shown!r}: longer than Go's limit of 2562047h")
        pos = m.end()
    seconds = total / 1e9
    return -seconds if negative else seconds


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
