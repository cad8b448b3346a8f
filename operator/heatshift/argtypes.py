"""argparse value types and options shared by the ``heatshift`` subcommands.

Each type turns a bad value into a one-line usage error that says what was expected.
:func:`add_login_arguments` is kubectl's ``--kubeconfig`` and ``--context``, for every command
that talks to a cluster (``run``, ``plan``, ``metering-sim``).
"""

from __future__ import annotations

import argparse
import math
from pathlib import Path

from heatshift import durations


def _duration(text: str) -> float:
    try:
        return durations.parse_duration(text)
    except durations.DurationError:
        raise argparse.ArgumentTypeError(
            f"expected a duration like 15m, 2s or 1h30m, got {text!r}"
        ) from None


def positive_duration(text: str) -> float:
    """A positive Go-style duration (``15m``, ``1h30m``) in seconds."""
    seconds = _duration(text)
    if seconds <= 0:
        raise argparse.ArgumentTypeError(f"expected a positive duration, got {text!r}")
    return seconds


def duration_or_zero(text: str) -> float:
    """A Go-style duration that may be ``0s``, in seconds."""
    seconds = _duration(text)
    if seconds < 0:
        raise argparse.ArgumentTypeError(f"expected a duration >= 0, got {text!r}")
    return seconds


def _whole_number(text: str, minimum: int) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
    if value < minimum:
        raise argparse.ArgumentTypeError(f"expected a number >= {minimum}, got {text!r}")
    return value


def count(text: str) -> int:
    """A whole number >= 0."""
    return _whole_number(text, 0)


def positive_int(text: str) -> int:
    """A whole number >= 1."""
    return _whole_number(text, 1)


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
