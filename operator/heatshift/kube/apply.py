"""Apply the part of a plan that starts now: place, release, annotate, explain.

:func:`release_patch` is pure: the current object and a :class:`Release` in, a JSON merge
patch out (or None when there is nothing to do); :func:`patch_for` is the same from a watched
view's record. It sets the pod template's (or Pod's) nodeSelector to the site's labels,
unsuspends the Job or removes the ``heatshift.dev/placement`` scheduling gate, and records
``heatshift.dev/site``, ``heatshift.dev/released-at`` and ``heatshift.dev/decision``. The
patch carries the ``resourceVersion`` it was computed from, so the API server refuses it (409)
if the object changed in between.

:func:`apply_release` does the I/O: the patch, computed from the view's record (as client-go
controllers patch from their informer's cache) or else after a read; on a conflict it reads
the object and retries a bounded number of times. :func:`release_all` applies a cycle's
releases concurrently, bounded, deadline releases first. It is idempotent: a workload that is
no longer held (released by an earlier attempt, by another replica, or unsuspended by its
owner) is left alone, and so is one that is running or finished — heatshift never touches
running work. Each release gets a Normal Event saying why this site and why now.

Called by :mod:`heatshift.kube.cycle`.
"""

from __future__ import annotations

import asyncio
import dataclasses
import enum
import logging
from collections.abc import Awaitable, Callable, Mapping, Sequence
from typing import Any, TypeVar

from heatshift.kube import client, events, isolation, workloads

log = logging.getLogger(__name__)

DEFAULT_ATTEMPTS = 3
"""Reads and patches per release before a persistent conflict is left to the next cycle."""
MAX_IN_FLIGHT = 16
"""Releases (read, patch, Event) in flight at once: enough to keep a burst of releases fast,
few enough that the API server's priority and fairness does not throttle the operator."""
DEADLINE_BACKOFF_S = (0.25, 0.5, 1.0, 2.0)
"""Waits before the retries of a deadline release that met a busy API server: under 4 s in
all, well inside a planning interval."""
MAX_RETRY_WAIT_S = 5.0
"""Longest single wait a Retry-After may ask of a deadline release."""

X = TypeVar("X")
R = TypeVar("R")
EVENT_REASON = "Released"


class ReleaseKind(enum.StrEnum):
    """Why a workload was released: the metrics label and part of the Event."""

    HEAT = "heat"
    """The heat-aware plan chose this site and this time for its heat."""
    DEADLINE = "deadline"
    """Its start deadline arrived: released heat or no heat."""
    HEAT_UNAWARE = "heat_unaware"
    """Placed without heat information (no usable metering, or the solver's fallback)."""


@dataclasses.dataclass(frozen=True, slots=True)
class Release:
    """One workload to start now, where, and why."""

    kind: workloads.Kind
    namespace: str
    name: str
    site: str | None
    """None only for a deadline release no LeafSite can take: the cluster places it."""
    node_selector: Mapping[str, str]
    decision: str
    reason: ReleaseKind
    policy: str
    seen: workloads.Workload | None = None
    """The watched view's record the plan was made from: the first attempt patches against
    its version without reading the object (a changed object answers 409, then it is read)."""

    @property
    def workload_id(self) -> str:
        """The released workload's :attr:`heatshift.kube.workloads.Workload.id`."""
        return workloads.workload_id(self.kind, self.namespace, self.name)


class Outcome(enum.StrEnum):
    RELEASED = "released"
    ALREADY_RELEASED = "already_released"
    """Not held any more: released before, or by someone else. Nothing was changed."""
    GONE = "gone"
    CONFLICT = "conflict"
    """Kept changing under us for every attempt; the next cycle tries again."""
    FAILED = "failed"
    """The API server refused the release (e.g. a policy webhook); a Warning Event says why and
    the next cycle tries again."""
    DEFERRED = "deferred"
    """The API server was busy (throttled, 5xx, no answer); the next cycle tries again."""


def path_of(kind: workloads.Kind, namespace: str, name: str) -> str:
    if kind is workloads.Kind.JOB:
        return client.path_for("batch", "v1", "jobs", namespace=namespace, name=name)
    return client.path_for("", "v1", "pods", namespace=namespace, name=name)


def _workload(kind: workloads.Kind, obj: Mapping[str, Any]) -> workloads.Workload:
    return workloads.from_job(obj) if kind is workloads.Kind.JOB else workloads.from_pod(obj)


def release_patch(obj: Mapping[str, Any], release: Release, now_s: float) -> dict[str, Any] | None:
    """The merge patch that releases ``obj`` as ``release`` says; None if it is not held."""
    return patch_for(_workload(release.kind, obj), release, now_s)


def patch_for(w: workloads.Workload, release: Release, now_s: float) -> dict[str, Any] | None:
    """The merge patch that releases the workload ``w`` records, preconditioned on the
    version ``w`` was read at; None if it is not held."""
    if not w.held:
        return None
    annotations = {
        workloads.RELEASED_AT: workloads.format_time(now_s),
        workloads.DECISION: release.decision,
        workloads.POLICY: release.policy,
    }
    if release.site is not None:
        annotations[workloads.SITE] = release.site
    patch: dict[str, Any] = {"metadata": {"annotations": annotations}}
    if w.resource_version:
        patch["metadata"]["resourceVersion"] = w.resource_version
    selector = dict(release.node_selector)
    if release.kind is workloads.Kind.JOB:
        spec: dict[str, Any] = {"suspend": False}
        if selector:
            spec["template"] = {"spec": {"nodeSelector": selector}}
    else:
        kept = [g for g in w.gates if not workloads.is_placement_gate(g)]
        spec = {"schedulingGates": kept}
        if selector:
            spec["nodeSelector"] = selector
    patch["spec"] = spec
    return patch


def event_message(release: Release) -> str:
    where = f"to LeafSite {release.site}" if release.site else "without a site"
    return f"released {where} by HeatPolicy {release.policy}: {release.decision}"


async def _attempt(
    api: client.KubeApi,
    path: str,
    release: Release,
    now_s: float,
    recorder: events.Recorder,
    seen: workloads.Workload | None = None,
) -> Outcome:
    """One patch, after reading the object, or straight from ``seen`` (the watched view's
    record, whose version the patch is preconditioned on: a changed object is a 409, never a
    blind write). Raises KubeConflict, and any retryable KubeAPIError, for
    :func:`apply_release` to decide on; every other answer is an outcome."""
    if seen is not None and seen.resource_version:
        w, involved = seen, isolation.workload_ref(seen).involved()
    else:
        try:
            obj = await api.get(path)
        except client.KubeNotFound:
            return Outcome.GONE
        except client.KubeAPIError as err:
            if err.retryable:
                raise
            log.warning("release not read: workload=%s: %s", path, err)
            return Outcome.FAILED
        w, involved = _workload(release.kind, obj), obj
    patch = patch_for(w, release, now_s)
    if patch is None:
        return Outcome.ALREADY_RELEASED
    try:
        updated = await api.patch(path, patch)
    except client.KubeNotFound:
        return Outcome.GONE
    except client.KubeAPIError as err:
        if err.retryable:  # a conflict, throttling, a 5xx, no answer
            raise
        # One refused workload must not hold up the others in this cycle.
        log.warning("release refused: workload=%s: %s", path, err)
        await recorder.post(
            involved,
            reason="ReleaseFailed",
            message=f"heatshift could not release it to {release.site or 'the cluster'}: "
            f"{err.message}; it retries on the next planning cycle",
            now_s=now_s,
            warning=True,
        )
        return Outcome.FAILED
    await recorder.post(
        updated or involved, reason=EVENT_REASON, message=event_message(release), now_s=now_s
    )
    return Outcome.RELEASED


async def apply_release(
    api: client.KubeApi,
    release: Release,
    now_s: float,
    recorder: events.Recorder,
    *,
    attempts: int = DEFAULT_ATTEMPTS,
    sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
) -> Outcome:
    """Release one workload, idempotently; see the module docstring.

    A conflict re-reads and retries, ``attempts`` times in all. A busy API server (429, 5xx,
    no answer, already retried by the client) defers a heat or heat-unaware release to the next
    cycle, but a deadline release waits and tries again within this cycle
    (:data:`DEADLINE_BACKOFF_S`, or longer when the server's Retry-After asks), since the next
    cycle may be too late for it. Every retry re-reads first, so none releases twice."""
    path = path_of(release.kind, release.namespace, release.name)
    waits = iter(DEADLINE_BACKOFF_S if release.reason is ReleaseKind.DEADLINE else ())
    conflicts = 0
    seen = release.seen
    while True:
        try:
            return await _attempt(api, path, release, now_s, recorder, seen)
        except client.KubeConflict:
            seen = None  # the view was behind: read the object itself from now on
            conflicts += 1
            log.info(
                "release conflict, re-reading: workload=%s/%s attempt=%d/%d",
                release.namespace,
                release.name,
                conflicts,
                attempts,
            )
            if conflicts >= attempts:
                return Outcome.CONFLICT
        except client.KubeAPIError as err:
            wait = next(waits, None)
            if wait is None:
                log.warning("release deferred to the next cycle: workload=%s: %s", path, err)
                return Outcome.DEFERRED
            asked = getattr(err, "retry_after_s", None)
            if isinstance(asked, int | float):
                wait = max(wait, min(float(asked), MAX_RETRY_WAIT_S))
            log.warning("deadline release retried in %.1fs: workload=%s: %s", wait, path, err)
            await sleep(wait)


async def run_bounded(
    items: Sequence[X], fn: Callable[[X], Awaitable[R]], *, limit: int
) -> list[R]:
    """``fn`` over ``items`` with at most ``limit`` in flight, started in the items' order;
    the results in that order. ``fn`` must not raise (wrap it in an isolation guard)."""
    results: dict[int, R] = {}
    queue = iter(enumerate(items))

    async def worker() -> None:
        # One shared iterator: each item is taken once, the next one as a slot frees up.
        for i, item in queue:
            results[i] = await fn(item)

    await asyncio.gather(*(worker() for _ in range(min(max(limit, 1), len(items)))))
    return [results[i] for i in range(len(items))]


async def release_all(
    api: client.KubeApi,
    releases: Sequence[Release],
    now_s: float,
    recorder: events.Recorder,
    *,
    guard: isolation.Guard,
    limit: int = MAX_IN_FLIGHT,
    sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
) -> list[Outcome]:
    """Apply ``releases`` concurrently, at most ``limit`` in flight, and their outcomes in
    the same order. Every deadline release is applied (finished) before any other starts, so a
    burst of heat releases never delays a deadline. Each release is one step of ``guard``: one
    that raises is FAILED alone."""

    async def one(release: Release) -> Outcome:
        ref = isolation.ref_for(release.kind, release.namespace, release.name)
        return await guard.run_async(
            ref,
            "release it",
            Outcome.FAILED,
            apply_release,
            api,
            release,
            now_s,
            recorder,
            sleep=sleep,
        )

    outcomes: dict[int, Outcome] = {}
    for deadline_first in (True, False):
        wave = [
            i
            for i, r in enumerate(releases)
            if (r.reason is ReleaseKind.DEADLINE) is deadline_first
        ]
        done = await run_bounded([releases[i] for i in wave], one, limit=limit)
        outcomes.update(zip(wave, done, strict=True))
    return [outcomes[i] for i in range(len(releases))]
