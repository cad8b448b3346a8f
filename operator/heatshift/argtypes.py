"""argparse value types and options shared by the ``heatshift`` subcommands.

Each type turns a bad value into a one-line usage error that says what was expected, at parse
time: a value that would make a long run fail (or never end) is rejected before it starts.
Duration limits come from :mod:`heatshift.bounds`, the same ranges the resources and models use.
:func:`add_login_arguments` is kubectl's ``--kubeconfig`` and ``--context``, for every command
that talks to a cluster (``run``, ``plan``, ``metering-sim``).
"""

from __future__ import annotations

import argparse
import math
import os
from collections.abc import Callable, Collection
from pathlib import Path

from heatshift import bounds, durations


def _duration(text: str) -> float:
    try:
        return durations.parse_duration(text)
    except durations.DurationError as err:
        raise argparse.ArgumentTypeError(
            f"{err}; expected a duration like 15m, 2s or 1h30m"
        ) from None


def duration_in(allowed: bounds.DurationRange) -> Callable[[str], float]:
    """A type for a Go-style duration within ``allowed``, in seconds."""

    def parse(text: str) -> float:
        seconds = _duration(text)
        if allowed.problem(seconds) is not None:
            raise argparse.ArgumentTypeError(
                f"{allowed.what} must be {allowed.words()}, got {text!r}"
            )
        return seconds

    parse.__name__ = allowed.what  # argparse names the type in some messages
    return parse


def output_file(suffixes: Collection[str]) -> Callable[[str], Path]:
    """A type for a file to be written later, ending in one of ``suffixes`` (``".png"``),
    in a directory that exists and is writable: checked now, so that a long run does not
    end in an error about where its output goes."""
    shown = ", ".join(sorted(suffixes))

    def parse(text: str) -> Path:
        path = Path(text)
        if path.suffix.lower() not in suffixes:
            raise argparse.ArgumentTypeError(
                f"expected a file name ending in one of {shown}, got {text!r}"
            )
        folder = path.parent
        if path.is_dir():
            raise argparse.ArgumentTypeError(f"expected a file, got the directory {text!r}")
        if not folder.is_dir():
            raise argparse.ArgumentTypeError(
                f"the directory {str(folder)!r} does not exist (for {text!r})"
            )
        if not os.access(folder, os.W_OK | os.X_OK) or (
            path.exists() and not os.access(path, os.W_OK)
        ):
            raise argparse.ArgumentTypeError(f"cannot write {text!r}: permission denied")
        return path

    return parse


def duration_or_zero(text: str) -> float:
    """A Go-style duration that may be ``0s``, in seconds."""
    seconds = _duration(text)
    if seconds < 0:
        raise argparse.ArgumentTypeError(f"expected a duration >= 0, got {text!r}")
    return seconds


def _whole_number(text: str, minimum: int, maximum: int | None = None) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
    if value < minimum:
        raise argparse.ArgumentTypeError(f"expected a number >= {minimum}, got {text!r}")
    if maximum is not None and value > maximum:
        raise argparse.ArgumentTypeError(f"expected a number <= {maximum:,}, got {text!r}")
    return value


def whole_number_in(minimum: int, maximum: int) -> Callable[[str], int]:
    """A type for a whole number in ``[minimum, maximum]``."""

    def parse(text: str) -> int:
        return _whole_number(text, minimum, maximum)

    return parse


def port(text: str) -> int:
    """A TCP port, 0 meaning any free one (or, where a flag says so, off)."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a port number, got {text!r}") from None
    if not 0 <= value <= 65535:
        raise argparse.ArgumentTypeError(f"expected a port in 0..65535, got {text!r}")
    return value


def positive_number(text: str) -> float:
    """A finite number > 0."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
    if not math.isfinite(value) or value <= 0:
        raise argparse.ArgumentTypeError(f"expected a positive number, got {text!r}")
    return value


def add_login_arguments(parser: argparse.ArgumentParser, *, what: str = "") -> None:
    """``--kubeconfig FILE`` and ``--context NAME``, meaning what they mean to kubectl."""
    parser.add_argument(
        "--kubeconfig",
        type=Path,
        metavar="FILE",
        help=f"{what}kubeconfig to use (default: the files in $KUBECONFIG, else the pod's "
        "service account, else ~/.kube/config)",
    )
    parser.add_argument(
        "--context",
        metavar="NAME",
        help="kubeconfig context to use (default: its current-context)",
    )
