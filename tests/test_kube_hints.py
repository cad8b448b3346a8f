"""Job hints: every annotation parses, every malformed value falls back and says why."""

from __future__ import annotations

import math

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from heatshift import bounds
from heatshift.kube import hints, workloads

DEADLINE = "heatshift.dev/deadline"
MAX_DELAY = "heatshift.dev/max-delay"
DURATION = "heatshift.dev/expected-duration"
POWER = "heatshift.dev/power-watts"
SITES = "heatshift.dev/sites"


def test_no_hints_means_no_problems() -> None:
    assert hints.parse_hints({}) == (hints.Hints(), ())


def test_every_hint_parses() -> None:
    found, problems = hints.parse_hints(
        {
            DEADLINE: "2023-11-15T06:00:00+01:00",
            MAX_DELAY: "6h",
            DURATION: "1h30m",
            POWER: "350.5",
            SITES: "pool-zuid, flats-noord",
            "unrelated.example/key": "x",
        }
    )
    assert problems == ()
    assert found == hints.Hints(
        deadline_s=1_700_024_400.0,
        max_delay_s=21_600.0,
        duration_s=5_400.0,
        power_watts=350.5,
        sites=frozenset({"pool-zuid", "flats-noord"}),
    )


@pytest.mark.parametrize(
    ("annotation", "value", "words"),
    [
        (DEADLINE, "tomorrow", "not an RFC 3339 time"),
        (DEADLINE, "2023-11-15T06:00:00", "no time zone"),
        (DEADLINE, "", "not an RFC 3339 time"),
        (MAX_DELAY, "six hours", "not a duration"),
        (MAX_DELAY, "-1h", "cannot be negative"),
        (DURATION, "-30m", "cannot be negative"),
        (MAX_DELAY, "6", "not a duration"),
        (DURATION, "0s", "longer than zero"),
        (DURATION, "forever", "not a duration"),
        (POWER, "lots", "not a number of watts"),
        (POWER, "nan", "not a finite number"),
        (POWER, "inf", "not a finite number"),
        (POWER, "-5", "cannot be negative"),
        (POWER, "2e6", "implausible"),
        (MAX_DELAY, "721h", "a maximum delay must be between 0s and 720h"),
        (MAX_DELAY, "-99999999h", "cannot be negative"),
        (DURATION, "2161h", "a job's expected duration must be longer than 0s and at most 2160h"),
        (DURATION, "99999999h", "a job's expected duration must be"),
        (DEADLINE, "1999-12-31T23:59:59Z", "the deadline must be a time between 2000 and 2100"),
        (DEADLINE, "9999-12-31T23:59:59-12:00", "the deadline must be a time between 2000"),
        (DEADLINE, "0001-01-01T00:00:00+01:00", "the deadline must be a time between 2000"),
        (SITES, " , ", "list of sites is empty"),
        (SITES, "Pool_Zuid", "not a valid LeafSite name"),
    ],
)
def test_a_malformed_hint_is_ignored_and_named(annotation: str, value: str, words: str) -> None:
    found, problems = hints.parse_hints({annotation: value, POWER + "-other": "1"})

    assert found == hints.Hints()
    (problem,) = problems
    assert problem.annotation == annotation
    assert problem.value == value
    assert annotation in problem.message
    assert words in problem.message
    assert "the policy default applies" in problem.message


def test_one_bad_hint_leaves_the_good_ones() -> None:
    found, problems = hints.parse_hints({MAX_DELAY: "2h", POWER: "watts?"})
    assert found.max_delay_s == 7200.0
    assert [p.annotation for p in problems] == [POWER]


def test_a_very_long_value_is_shortened_in_the_message() -> None:
    _, (problem,) = hints.parse_hints({SITES: "x" * 500 + "_"})
    assert len(problem.message) < 300
    assert problem.value == "x" * 500 + "_"


@pytest.mark.parametrize(
    ("given", "expected", "source"),
    [
        (hints.Hints(), 1_000.0 + 600.0, "its SLA class"),
        (hints.Hints(max_delay_s=60.0), 1_060.0, "its max-delay annotation"),
        (hints.Hints(deadline_s=5_000.0), 5_000.0 - 300.0, "its deadline annotation"),
        # both: the earlier wins
        (hints.Hints(deadline_s=5_000.0, max_delay_s=60.0), 1_060.0, "its max-delay annotation"),
        # a deadline already past means start now, never before submission
        (hints.Hints(deadline_s=900.0), 1_000.0, "its deadline annotation"),
    ],
)
def test_start_deadline(given: hints.Hints, expected: float, source: str) -> None:
    assert hints.start_deadline(
        given, submitted_s=1_000.0, duration_s=300.0, default_max_delay_s=600.0
    ) == (expected, source)


def test_max_delay_hint_99999999h_is_a_hint_problem() -> None:
    found, (problem,) = hints.parse_hints({MAX_DELAY: "99999999h"})

    assert found.max_delay_s is None
    assert problem.message == (
        "annotation heatshift.dev/max-delay='99999999h' ignored: a maximum delay must be "
        "between 0s and 720h; the policy default applies"
    )


def test_max_delay_hint_400_digits_is_a_hint_problem() -> None:
    value = "9" * 400 + "h"
    found, (problem,) = hints.parse_hints({MAX_DELAY: value})

    assert found.max_delay_s is None
    assert "a maximum delay must be between 0s and 720h" in problem.message
    assert len(problem.message) < 300


def test_a_deadline_hint_far_out_is_capped_at_the_longest_hold() -> None:
    found, problems = hints.parse_hints({DEADLINE: "2099-01-01T00:00:00Z"})
    assert problems == ()

    deadline, source = hints.start_deadline(
        found, submitted_s=1_000_000_000.0, duration_s=60.0, default_max_delay_s=600.0
    )

    assert deadline == 1_000_000_000.0 + bounds.MAX_DELAY.high_s
    assert source == "the longest hold heatshift allows (720h)"


@given(
    deadline=st.none() | st.floats(allow_nan=True, allow_infinity=True),
    max_delay=st.none() | st.floats(min_value=0.0, allow_infinity=True),
    default=st.floats(),
    duration=st.floats(min_value=1.0, max_value=bounds.JOB_DURATION.high_s),
)
@settings(max_examples=200)
def test_no_start_deadline_is_more_than_max_delay_after_submission(
    deadline: float | None, max_delay: float | None, default: float, duration: float
) -> None:
    submitted = 1_700_000_000.0
    start, source = hints.start_deadline(
        hints.Hints(deadline_s=deadline, max_delay_s=max_delay),
        submitted_s=submitted,
        duration_s=duration,
        default_max_delay_s=default,
    )

    assert submitted <= start <= submitted + bounds.MAX_DELAY.high_s
    assert source


@pytest.mark.parametrize(
    ("unix_s", "text"),
    [
        (1_700_000_000.4, "2023-11-14T22:13:20Z"),
        (360_000_000_000.0, "360000000000 (Unix seconds)"),  # the year 13431
        (math.inf, "inf (Unix seconds)"),
        (math.nan, "nan (Unix seconds)"),
        (-1e20, "-100000000000000000000 (Unix seconds)"),
    ],
)
def test_formatting_a_start_deadline_in_the_year_13431_never_raises(
    unix_s: float, text: str
) -> None:
    assert workloads.format_time(unix_s) == text
