"""Job hints: every annotation parses, every malformed value falls back and says why."""

from __future__ import annotations

import pytest

from heatshift.kube import hints

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
