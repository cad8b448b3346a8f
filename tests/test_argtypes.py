"""The command-line value types: good values parse, bad ones say what was expected."""

from __future__ import annotations

import argparse
from collections.abc import Callable

import pytest

from heatshift import argtypes


@pytest.mark.parametrize(
    ("parse", "text", "value"),
    [
        (argtypes.positive_duration, "1h30m", 5400.0),
        (argtypes.duration_or_zero, "0s", 0.0),
        (argtypes.count, "0", 0),
        (argtypes.positive_int, "3", 3),
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
        (argtypes.positive_duration, "soon", "expected a duration like 15m"),
        (argtypes.positive_duration, "0s", "expected a positive duration"),
        (argtypes.duration_or_zero, "-1s", "expected a duration"),
        (argtypes.count, "1.5", "expected a whole number"),
        (argtypes.count, "-1", "expected a number >= 0"),
        (argtypes.positive_int, "0", "expected a number >= 1"),
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
