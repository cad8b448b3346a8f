"""The command-line value types: good values parse, bad ones say what was expected."""

from __future__ import annotations

import argparse
from collections.abc import Callable
from pathlib import Path

import pytest

from heatshift import argtypes, bounds


@pytest.mark.parametrize(
    ("parse", "text", "value"),
    [
        (argtypes.duration_in(bounds.PLANNING_STEP), "1h30m", 5400.0),
        (argtypes.duration_in(bounds.PLANNING_STEP), "1m", 60.0),
        (argtypes.duration_in(bounds.PLANNING_STEP), "24h", 86400.0),
        (argtypes.duration_or_zero, "0s", 0.0),
        (argtypes.whole_number_in(0, 5), "0", 0),
        (argtypes.whole_number_in(1, 5), "5", 5),
        (argtypes.port, "0", 0),
        (argtypes.port, "65535", 65535),
        (argtypes.positive_number, "60", 60.0),
    ],
)
def test_good_values(parse: Callable[[str], object], text: str, value: object) -> None:
    assert parse(text) == value


@pytest.mark.parametrize(
    ("parse", "text", "expected"),
    [
        (argtypes.duration_in(bounds.PLANNING_STEP), "soon", "expected a duration like 15m"),
        (argtypes.duration_in(bounds.PLANNING_STEP), "59s", "between 1m and 24h"),
        (argtypes.duration_in(bounds.PLANNING_STEP), "1ms", "between 1m and 24h"),
        (argtypes.duration_in(bounds.SOLVER_TIME_LIMIT), "0s", "longer than 0s and at most 5m"),
        (argtypes.duration_in(bounds.PLANNING_HORIZON), "99999999h", "longer than Go's limit"),
        (argtypes.duration_or_zero, "-1s", "expected a duration"),
        (argtypes.whole_number_in(0, 5), "1.5", "expected a whole number"),
        (argtypes.whole_number_in(0, 5), "-1", "expected a number >= 0"),
        (argtypes.whole_number_in(1, 5), "0", "expected a number >= 1"),
        (argtypes.whole_number_in(1, 5000), "5001", "expected a number <= 5,000"),
        (argtypes.port, "http", "expected a port number"),
        (argtypes.port, "65536", "expected a port in 0..65535"),
        (argtypes.positive_number, "nan", "expected a positive number"),
        (argtypes.positive_number, "fast", "expected a number"),
    ],
)
def test_bad_values_say_what_was_expected(
    parse: Callable[[str], object], text: str, expected: str
) -> None:
    with pytest.raises(argparse.ArgumentTypeError, match=expected) as err:
        parse(text)
    assert repr(text) in str(err.value)


def test_output_file_is_checked_before_anything_is_written(tmp_path: Path) -> None:
    parse = argtypes.output_file((".png", ".svg"))
    assert parse(str(tmp_path / "plot.svg")) == tmp_path / "plot.svg"
    assert parse(str(tmp_path / "PLOT.PNG")) == tmp_path / "PLOT.PNG"
    for text, expected in (
        (str(tmp_path / "plot"), "expected a file name ending in one of .png, .svg"),
        (str(tmp_path / "plot.txt"), "expected a file name ending in one of .png, .svg"),
        (str(tmp_path / "nowhere" / "plot.png"), "does not exist"),
    ):
        with pytest.raises(argparse.ArgumentTypeError, match=expected):
            parse(text)
    assert list(tmp_path.iterdir()) == []
