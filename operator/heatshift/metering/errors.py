"""The metering sources' own errors, each knowing which rejection it becomes.

Raised inside :mod:`heatshift.metering.http` and :mod:`heatshift.metering.prometheus`, always
chained to the library error that caused it (``raise ... from err``), and caught at the edge of
``fetch``: a caller of a source never sees these, only per-site rejections.
"""

from __future__ import annotations

from heatshift.metering import readings


class MeteringError(Exception):
    """A reading could not be had. ``kind`` says which rejection it turns into."""

    kind: readings.RejectionKind = readings.RejectionKind.UNAVAILABLE

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class MeteringUnavailable(MeteringError):
    """The source could not be reached or kept failing (network, timeout, 5xx, 429)."""


class MeteringHTTPError(MeteringError):
    """The source answered with an HTTP error status that retrying will not fix."""

    def __init__(self, message: str, status: int) -> None:
        super().__init__(message)
        self.status = status


class MeteringAuthError(MeteringHTTPError):
    """The source refused our credentials (401 or 403)."""


class MeteringNotFound(MeteringHTTPError):
    """The source does not know the site (404)."""

    kind = readings.RejectionKind.MISSING


class MeteringMalformed(MeteringError):
    """The source answered, but not in the contract's shape (bad JSON, wrong structure)."""

    kind = readings.RejectionKind.MALFORMED


class MeteringNoData(MeteringError):
    """The source answered, but holds no value for a quantity (e.g. an empty PromQL result)."""

    kind = readings.RejectionKind.MISSING
