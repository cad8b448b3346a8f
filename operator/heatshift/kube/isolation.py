"""Per-object isolation in a planning cycle: one object's failure stays that object's.

A cycle does many small things per object: build a Job's request from its hints, turn a
LeafSite into a site, word a release's decision, patch a Job, write a status, post an Event.
:class:`Guard` runs each such step. When one raises, the guard logs the failure with the
object's name, records a :class:`Failure` (the object, the step, the error in words) and
returns the step's fallback, so every other object goes on, above all every deadline release.
At its end the cycle posts each failure as a Warning Event on the object concerned.

One mechanism instead of a ``try`` per call site: what a step does on failure is its fallback,
stated where the step is called. No I/O but logging. Called by :mod:`heatshift.kube.cycle`,
:mod:`heatshift.kube.snapshot` and :mod:`heatshift.kube.apply`.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Awaitable, Callable
from typing import Any, ParamSpec, TypeVar

from heatshift import resources
from heatshift.kube import workloads

log = logging.getLogger(__name__)

T = TypeVar("T")
P = ParamSpec("P")

EVENT_REASON = "PlanningStepFailed"
MAX_ERROR_CHARS = 300
MAX_FAILURES = 1_000
"""Failures kept per cycle; past it they are still logged, just not posted as Events."""


@dataclasses.dataclass(frozen=True, slots=True)
class Ref:
    """The object a step works on: enough to name it in a log line and an Event."""

    api_version: str
    kind: str
    name: str
    namespace: str = ""
    uid: str = ""

    def __str__(self) -> str:
        where = f"{self.namespace}/" if self.namespace else ""
        return f"{self.kind} {where}{self.name}"

    def involved(self) -> dict[str, Any]:
        """The object as an Event's ``involvedObject`` source (see :mod:`heatshift.kube.events`)."""
        meta = {"name": self.name, "namespace": self.namespace, "uid": self.uid}
        return {"apiVersion": self.api_version, "kind": self.kind, "metadata": meta}


_API_VERSIONS = {
    workloads.Kind.JOB: "batch/v1",
    workloads.Kind.POD: "v1",
    workloads.Kind.WORKLOAD: f"{workloads.KUEUE_GROUP}/v1beta2",
}


def ref_for(kind: workloads.Kind, namespace: str, name: str, uid: str = "") -> Ref:
    return Ref(_API_VERSIONS[kind], kind.value, name, namespace, uid)


def workload_ref(w: workloads.Workload) -> Ref:
    return ref_for(w.kind, w.namespace, w.name, w.uid)


def leafsite_ref(name: str) -> Ref:
    return Ref(resources.GROUP_VERSION, "LeafSite", name)


def policy_ref(name: str) -> Ref:
    return Ref(resources.GROUP_VERSION, "HeatPolicy", name)


@dataclasses.dataclass(frozen=True, slots=True)
class Failure:
    """One step that failed for one object."""

    ref: Ref
    step: str
    """What heatshift was doing, as a verb phrase ("release it")."""
    error: str

    @property
    def message(self) -> str:
        return (
            f"heatshift could not {self.step} in this planning cycle: {self.error}; nothing "
            "else was held up, and the next cycle tries again"
        )


def _words(err: BaseException) -> str:
    text = f"{type(err).__name__}: {err}"
    return text if len(text) <= MAX_ERROR_CHARS else text[: MAX_ERROR_CHARS - 3] + "..."


class Guard:
    """Runs per-object steps; a step that raises is logged, recorded and replaced by its
    fallback. Only ``Exception`` is caught: cancellation still ends the cycle."""

    def __init__(self) -> None:
        self.failures: list[Failure] = []

    def _record(self, ref: Ref, step: str, err: Exception) -> None:
        log.error("step failed: object=%s step=%r: %s", ref, step, _words(err), exc_info=err)
        if len(self.failures) < MAX_FAILURES:
            self.failures.append(Failure(ref, step, _words(err)))

    def run(
        self,
        ref: Ref,
        step: str,
        fallback: T,
        fn: Callable[P, T],
        *args: P.args,
        **kwargs: P.kwargs,
    ) -> T:
        """``fn(*args, **kwargs)``, or ``fallback`` if it raises."""
        try:
            return fn(*args, **kwargs)
        except Exception as err:  # isolation: any failure is this object's alone
            self._record(ref, step, err)
            return fallback

    async def run_async(
        self,
        ref: Ref,
        step: str,
        fallback: T,
        fn: Callable[P, Awaitable[T]],
        *args: P.args,
        **kwargs: P.kwargs,
    ) -> T:
        """``await fn(*args, **kwargs)``, or ``fallback`` if it raises."""
        try:
            return await fn(*args, **kwargs)
        except Exception as err:  # isolation: any failure is this object's alone
            self._record(ref, step, err)
            return fallback
