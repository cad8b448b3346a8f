"""One planning cycle for one HeatPolicy: read, meter, snapshot, plan, decide, release, report.

The phases, numbered in :func:`run_cycle` and each timed in the log line that closes the cycle:

1. **read**: LeafSites, HeatPolicies, Nodes, unfinished Jobs (and bare Pods if a policy
   holds them), namespace labels: from the operator's watched view, no request
   (:mod:`heatshift.kube.view`), or listed now by one-shot commands (:func:`read_cluster`).
   A view older than the policy's sites' metering staleness limit is planned from all the
   same, and said so in the log and the HeatPolicy's status.
2. **meter**: one reading or rejection per site of the policy, time-bounded
   (:func:`heatshift.kube.meters.fetch_results`).
3. **snapshot**: :func:`heatshift.kube.snapshot.build_snapshot`, with the releases of earlier
   cycles that the view does not show yet counted as running (:mod:`heatshift.kube.placements`).
   Phases 3 to 6 run for one policy at a time, so policies sharing a site never both fill it.
4. **plan**: the production planner in a worker thread, bounded by the solver's time limit
   plus a margin; if it raises or overruns, the heat-unaware default plan instead
   (:func:`make_plan`).
5. **decide**: the deadline guard once more against the *operator's* next decision, which may
   be further off than the planner's step, and the releases that start before it, each with
   its reason in words (:func:`releases_for`). A due job with every allowed site full is
   released all the same, to wait in the cluster's queue at its site.
6. **release**: concurrently, at most :data:`heatshift.kube.apply.MAX_IN_FLIGHT` at once,
   every deadline release before any other (:func:`heatshift.kube.apply.release_all`).
7. **report**: Warning Events for malformed hints and an unusable spec, LeafSite and HeatPolicy
   status, metrics; last, a Warning Event for every step that failed.

Isolation: past the read, every per-object step (a site or a job into the snapshot, the words
of a release, a release, a status, an Event) runs under one :class:`heatshift.kube.isolation.Guard`.
A step that raises fails for its object alone: it is logged with the object's name and
posted as a Warning Event on it in phase 7, and every other object, every deadline release
above all, goes on. A deadline release depends on nothing but its job's numbers.

With ``apply=False`` (``heatshift plan --dry-run``) phases 6 and 7 are skipped and nothing is
changed. Called by the Kopf wiring on each policy's timer and by the CLI.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import math
import time
from collections.abc import Mapping, Sequence
from typing import Any

import pydantic

from heatshift import heap, model, resources
from heatshift import metrics as metrics_mod
from heatshift.kube import apply, client, events, isolation, meters, selection, view, workloads
from heatshift.kube import placements as placements_mod
from heatshift.kube import snapshot as snapshot_mod
from heatshift.kube import status as status_mod
from heatshift.metering import readings
from heatshift.planner import config as planner_config
from heatshift.planner import greedy, policies

log = logging.getLogger(__name__)

PLANNER_MARGIN_S = 5.0
"""Extra wall time the planner gets beyond the solver's limit (model building, checking)."""
METERING_TIMEOUT_S = 20.0
"""Most one cycle waits for all metering sources together."""
DEADLINE_PREFIX = "start deadline reached"
"""How the planner's deadline guard words its reasons (see planner.greedy)."""

LEAFSITES = view.LEAFSITES
HEATPOLICIES = view.HEATPOLICIES


class PolicyInvalid(Exception):
    """The HeatPolicy's spec cannot be used; the message says why, in words."""


class PolicyNotFound(Exception):
    """The HeatPolicy does not exist (any more)."""


Cluster = view.Cluster
"""What one cycle read (see :mod:`heatshift.kube.view`)."""


def _parse(
    objs: Sequence[Mapping[str, Any]], kind: str, invalid: dict[str, str]
) -> list[resources.Resource]:
    """Parse LeafSite or HeatPolicy bodies as the view does; unusable ones into ``invalid``."""
    out: list[resources.Resource] = []
    for record in (view.parsed_record(obj, kind) for obj in objs):
        if record.resource is None:
            invalid[f"{kind}/{record.name}"] = record.problem or "unreadable"
        else:
            out.append(record.resource)
    return out


async def read_cluster(api: client.KubeApi, namespaces: Sequence[str] = ()) -> Cluster:
    """Everything a cycle needs, listed now; ``namespaces`` limits Jobs and Pods (empty: all).
    For one-shot commands: the operator reads its watched view instead."""
    return await view.ListingReader(api, namespaces).read(time.time())


class _Listing:
    """The reader of a cycle given none: :func:`read_cluster`, looked up when called."""

    def __init__(self, api: client.KubeApi, namespaces: Sequence[str]) -> None:
        self.api, self.namespaces = api, namespaces

    async def read(self, now_s: float) -> Cluster:
        return await read_cluster(self.api, self.namespaces)

    async def stale(self, cluster: Cluster, limit_s: float, now_s: float) -> dict[str, float]:
        return {}


@dataclasses.dataclass(frozen=True)
class PlanOutcome:
    plan: model.Plan
    seconds: float
    error: str | None = None
    """Why the production planner's plan was not used, in words; None when it was."""


async def make_plan(
    snapshot: model.Snapshot, cfg: planner_config.PlannerConfig, *, timeout_s: float
) -> PlanOutcome:
    """The production plan from a worker thread; the heat-unaware plan if that fails."""
    policy = policies.make_policy("heatshift", cfg)
    started = time.monotonic()
    try:
        plan = await asyncio.wait_for(asyncio.to_thread(policy.decide, snapshot), timeout_s)
        return PlanOutcome(plan, time.monotonic() - started)
    except TimeoutError:
        # The thread cannot be stopped; it finishes in the background and is ignored.
        error = f"the planner took longer than {timeout_s:g}s"
    except Exception as err:  # any planner failure must still release due jobs
        log.exception("planner failed; falling back to the heat-unaware plan")
        error = f"the planner failed: {err}"
    return PlanOutcome(greedy.default_plan(snapshot), time.monotonic() - started, error)


def _when_words(t_s: float) -> str:
    return workloads.format_time(t_s)


def _release_kind(
    p: model.Placement,
    job: model.JobRequest,
    outcome: PlanOutcome,
    built: snapshot_mod.Built,
    next_decision_s: float,
) -> apply.ReleaseKind:
    # A job that could not wait for the next decision was released by its deadline,
    # whatever else the plan said about the site.
    if job.deadline_s < next_decision_s or p.reason.startswith(DEADLINE_PREFIX):
        return apply.ReleaseKind.DEADLINE
    if outcome.error is not None or not built.snapshot.states[p.site].heat_aware:
        return apply.ReleaseKind.HEAT_UNAWARE
    return apply.ReleaseKind.HEAT


def _decision(
    p: model.Placement,
    job: model.JobRequest,
    outcome: PlanOutcome,
    built: snapshot_mod.Built,
    next_decision_s: float,
) -> str:
    """Why this site and why now, in words, for the annotation and the Event."""
    if job.deadline_s < next_decision_s:
        why_now = (
            f"its start deadline {_when_words(job.deadline_s)} (from "
            f"{built.deadline_sources[p.job_id]}) falls before the next decision"
        )
    elif p.start_s <= built.snapshot.now_s + 1e-6:
        why_now = f"the plan starts it now; it could wait until {_when_words(job.deadline_s)}"
    else:
        # The planner's slots are finer than the operator's re-planning: a start planned
        # before the next decision happens now rather than late.
        why_now = (
            f"the plan starts it at {_when_words(p.start_s)}, before the next decision at "
            f"{_when_words(next_decision_s)}"
        )
    fallback = f" ({outcome.error}: heat-unaware plan)" if outcome.error else ""
    return f"why {p.site}: {p.reason}{fallback}; why now: {why_now}"


def _release_of(
    w: workloads.Workload,
    site: str | None,
    leafsites: Mapping[str, resources.LeafSite],
    decision: str,
    reason: apply.ReleaseKind,
    policy: str,
) -> apply.Release:
    """``w`` released to ``site`` (its nodeSelector), or without one (the cluster places it)."""
    return apply.Release(
        kind=w.kind,
        namespace=w.namespace,
        name=w.name,
        site=site,
        node_selector=leafsites[site].spec.node_selector if site is not None else {},
        decision=decision,
        reason=reason,
        policy=policy,
        seen=w,
    )


def releases_for(
    built: snapshot_mod.Built,
    outcome: PlanOutcome,
    *,
    leafsites: Mapping[str, resources.LeafSite],
    policy: str,
    next_decision_s: float,
    guard: isolation.Guard | None = None,
) -> list[apply.Release]:
    """What to start now: placements starting before the next decision, after the guard,
    plus deadline releases without a site for jobs no LeafSite can ever take.

    Wording a decision is a step of ``guard`` per workload with a plain fallback text, so a
    release, a deadline release above all, never depends on its explanation being written."""
    guard = guard or isolation.Guard()
    snap = built.snapshot
    placements, _ = greedy.enforce_deadlines(snap, outcome.plan.placements, next_decision_s)
    by_id = {j.id: j for j in snap.pending}
    out: list[apply.Release] = []
    for p in sorted(placements, key=lambda p: (p.start_s, p.job_id)):
        if p.start_s >= next_decision_s or p.job_id not in built.held:
            continue
        w, job = built.held[p.job_id], by_id[p.job_id]
        kind = _release_kind(p, job, outcome, built, next_decision_s)
        plain = f"why {p.site}: the plan chose it; why now: {kind.value} release"
        decision = guard.run(
            isolation.workload_ref(w),
            "explain its release",
            plain,
            _decision,
            p,
            job,
            outcome,
            built,
            next_decision_s,
        )
        out.append(_release_of(w, p.site, leafsites, decision, kind, policy))
    for u in outcome.plan.unschedulable:
        stuck = by_id.get(u.job_id)
        if stuck is None or stuck.deadline_s >= next_decision_s or u.job_id not in built.held:
            continue
        w = built.held[u.job_id]
        # Compute before heat: a job no site can take still starts by its deadline, placed by
        # the cluster's own scheduler.
        out.append(
            _release_of(
                w,
                None,
                leafsites,
                f"no LeafSite can take it ({u.reason[:200]}); why now: its start "
                f"deadline {_when_words(stuck.deadline_s)} falls before the next decision",
                apply.ReleaseKind.DEADLINE,
                policy,
            )
        )
    out.extend(_queued_at_deadline(built, outcome, out, leafsites, policy, next_decision_s))
    return out


def _queued_at_deadline(
    built: snapshot_mod.Built,
    outcome: PlanOutcome,
    releasing: Sequence[apply.Release],
    leafsites: Mapping[str, resources.LeafSite],
    policy: str,
    next_decision_s: float,
) -> list[apply.Release]:
    """Due jobs no allowed site has room for now (every one is full of running work): each
    goes to the site its plan starts it at first (else the first allowed one) and waits there
    in the cluster's own queue, as it would without heatshift, rather than held for a cycle
    after room frees. Holding never costs a deadline the cluster alone would have met."""
    snap = built.snapshot
    releasing_ids = {r.workload_id for r in releasing}
    planned = {p.job_id: p.site for p in sorted(outcome.plan.placements, key=lambda p: p.start_s)}
    out: list[apply.Release] = []
    for job in sorted(snap.pending, key=lambda j: (j.deadline_s, j.id)):
        if job.deadline_s >= next_decision_s or job.id in releasing_ids or job.id not in built.held:
            continue
        allowed = [
            s.name
            for s in snap.sites
            if job.may_run_at(s.name) and job.resources.fits_within(s.capacity)
        ]
        site = planned.get(job.id) if planned.get(job.id) in allowed else None
        site = site or next(iter(allowed), None)
        if site is None or site not in leafsites:
            continue  # no site can ever take it: released without a site above
        w = built.held[job.id]
        out.append(
            _release_of(
                w,
                site,
                leafsites,
                f"why {site}: every allowed site is full now and the plan has room for "
                f"it here first, so it waits in the cluster's queue there; why now: its start "
                f"deadline {_when_words(job.deadline_s)} (from "
                f"{built.deadline_sources.get(job.id, 'its policy')}) falls before the next "
                "decision",
                apply.ReleaseKind.DEADLINE,
                policy,
            )
        )
    return out


@dataclasses.dataclass
class Memory:
    """What the operator remembers between cycles (per process; rebuilt after a restart
    from the totals and the ledger in status)."""

    recorder: events.Recorder
    metrics: metrics_mod.Metrics
    released: dict[str, int] = dataclasses.field(default_factory=dict)
    deadline_forced: dict[str, int] = dataclasses.field(default_factory=dict)
    placements: placements_mod.Placements = dataclasses.field(
        default_factory=placements_mod.Placements
    )
    """Cycles place one at a time; releases the view has not shown yet (kube.placements)."""
    kueue_admitted: dict[str, tuple[workloads.Workload, ...]] = dataclasses.field(
        default_factory=dict
    )
    """Per heatshift AdmissionCheck: the Kueue Workloads it admitted to a site that still run
    (:mod:`heatshift.kueue.controller`); every cycle counts them at their sites."""
    kueue_waiting: dict[str, dict[str, int]] = dataclasses.field(default_factory=dict)
    """Per heatshift AdmissionCheck, per HeatPolicy: the Workloads it holds in Retry, for the
    policy's status."""
    ledgers: dict[str, resources.LedgerStatus] = dataclasses.field(default_factory=dict)
    """The ledger last written per site: newer than a status read before another policy's
    cycle wrote it, so a stretch of time is counted once however many policies cover a site."""
    site_writes: status_mod.SiteStatusWrites = dataclasses.field(
        default_factory=status_mod.SiteStatusWrites
    )
    """The LeafSite statuses last written, so a site shared by policies is not rewritten by
    each of them every cycle."""


@dataclasses.dataclass(frozen=True)
class CycleResult:
    """One cycle's outcome: what it saw, planned and did."""

    policy: str
    built: snapshot_mod.Built
    outcome: PlanOutcome
    releases: tuple[apply.Release, ...]
    applied: Mapping[str, apply.Outcome]
    timings: Mapping[str, float]
    failures: tuple[isolation.Failure, ...] = ()
    """Steps that failed for one object each (each also posted as a Warning Event)."""
    stale_view: Mapping[str, float] = dataclasses.field(default_factory=dict)
    """Resource plural -> age (s) of the parts of the view older than the staleness limit that
    could not be confirmed; empty when the cycle planned from a current view."""


def policy_from(cluster: Cluster, name: str) -> resources.HeatPolicy:
    """The named policy; raises PolicyInvalid or PolicyNotFound."""
    why = cluster.invalid.get(f"HeatPolicy/{name}")
    if why is not None:
        raise PolicyInvalid(why)
    for p in cluster.policies:
        if p.metadata.name == name:
            return p
    raise PolicyNotFound(f"HeatPolicy {name!r} not found")


async def run_cycle(
    api: client.KubeApi,
    policy_name: str,
    memory: Memory,
    *,
    now_s: float,
    apply_plan: bool = True,
    namespaces: Sequence[str] = (),
    meter_factory: meters.SourceFactory = meters.default_source,
    metering_timeout_s: float = METERING_TIMEOUT_S,
    reader: view.Reader | None = None,
) -> CycleResult:
    """One cycle for ``policy_name``; see the module docstring. ``reader`` is the watched view
    in the operator; without one the cluster is listed now (:func:`read_cluster`). Raises
    PolicyInvalid, PolicyNotFound, or KubeAPIError when the cluster cannot be read. Past the
    read, a failure of one object's step is that object's alone (:class:`isolation.Guard`): it
    gets a Warning Event and the cycle goes on."""
    timings: dict[str, float] = {}
    guard = isolation.Guard()
    reader = reader or _Listing(api, namespaces)

    # 1. read: the cluster as the view has it (or as listed now), and whether the view is
    # older than the policy's sites' staleness limit: then planned from anyway (a deadline must
    # not wait on a watch), but said so.
    t = time.monotonic()
    cluster = await reader.read(now_s)
    policy = policy_from(cluster, policy_name)
    sites = snapshot_mod.policy_sites(policy, cluster.leafsites)
    limit_s = min((s.spec.staleness_limit_s for s in sites), default=math.inf)
    stale = await reader.stale(cluster, limit_s, now_s)
    timings["read"] = time.monotonic() - t
    view_note = view.stale_words(stale, limit_s) if stale else None
    if view_note is not None:
        log.warning("cycle policy=%s: %s", policy_name, view_note)

    # 2. meter: one reading or rejection per site, bounded in time.
    t = time.monotonic()
    results = await meters.fetch_results(
        api, sites, now_s, timeout_s=metering_timeout_s, factory=meter_factory
    )
    timings["meter"] = time.monotonic() - t

    # 3-6 place: one policy at a time (its snapshot counts every earlier cycle's releases,
    # seen through the watch or still only booked), so policies sharing a site never both
    # fill it. A dry run places nothing and waits for no one.
    applied: dict[str, apply.Outcome] = {}
    async with memory.placements.lock if apply_plan else contextlib.nullcontext():
        # 3. snapshot: sites, held and running jobs; per site and per job, guarded.
        t = time.monotonic()
        seen = [
            *memory.placements.overlay(cluster.workloads, now_s),
            *(w for admitted in memory.kueue_admitted.values() for w in admitted),
        ]
        built = snapshot_mod.build_snapshot(
            policy,
            policies=cluster.policies,
            leafsites=sites,
            nodes=cluster.nodes,
            all_workloads=seen,
            ns_labels=cluster.ns_labels,
            results=results,
            now_s=now_s,
            guard=guard,
        )
        timings["snapshot"] = time.monotonic() - t

        # 4. plan: the production planner, or the heat-unaware plan if it fails or overruns.
        cfg = policy.spec.planner_config()
        outcome = await make_plan(
            built.snapshot, cfg, timeout_s=cfg.time_limit_s + PLANNER_MARGIN_S
        )
        timings["plan"] = outcome.seconds

        # 5. decide: what starts before the next decision, deadline guard included.
        t = time.monotonic()
        releases = releases_for(
            built,
            outcome,
            leafsites={s.metadata.name: s for s in sites},
            policy=policy_name,
            next_decision_s=now_s + policy.spec.replan_interval_s,
            guard=guard,
        )
        releases = fair_share(releases, policy, cluster, seen, len(built.held))
        timings["decide"] = time.monotonic() - t

        if apply_plan:
            # 6. release: concurrently, bounded, every deadline release first.
            t = time.monotonic()
            applied = await _release(api, policy, releases, memory, now_s, guard)
            _book(memory.placements, built, releases, applied, now_s)
            timings["release"] = time.monotonic() - t

    if apply_plan:
        # 7. report: warnings, statuses, metrics; then every failed step as an Event.
        t = time.monotonic()
        await _report(
            api, policy, cluster, built, outcome, releases, applied, memory, now_s, guard, view_note
        )
        timings["report"] = time.monotonic() - t
    # The cycle's snapshot and plan are garbage now: give their memory back (heatshift.heap).
    heap.trim()
    log.info(
        "cycle policy=%s held=%d running=%d sites=%d heat_aware=%d status=%s releases=%d "
        "applied=%s fallback=%s failed_steps=%d %s",
        policy_name,
        len(built.snapshot.pending),
        len(built.snapshot.running),
        len(built.snapshot.sites),
        sum(1 for s in built.snapshot.states.values() if s.heat_aware),
        outcome.plan.status.value,
        len(releases),
        "yes" if apply_plan else "dry-run",
        outcome.error or "no",
        len(guard.failures),
        " ".join(f"{k}_s={v:.3f}" for k, v in timings.items()),
    )
    return CycleResult(
        policy_name,
        built,
        outcome,
        tuple(releases),
        applied,
        timings,
        tuple(guard.failures),
        stale,
    )


def fair_share(
    releases: Sequence[apply.Release],
    policy: resources.HeatPolicy,
    cluster: Cluster,
    seen: Sequence[workloads.Workload],
    own_held: int,
) -> list[apply.Release]:
    """This cycle's releases, those it chose (not deadline releases) cut to the policy's share
    of held work among the policies sharing any of its sites. Policies place one at a time,
    and without this the first to place after capacity frees would take all of it, cycle
    after cycle, while the others' work waited for its deadlines. The rest is placed by the
    next cycles, by this policy or another."""
    name = policy.metadata.name
    mine = {s.metadata.name for s in snapshot_mod.policy_sites(policy, cluster.leafsites)}
    sharing = {
        p.metadata.name
        for p in cluster.policies
        if p.metadata.name != name
        and mine & {s.metadata.name for s in snapshot_mod.policy_sites(p, cluster.leafsites)}
    }
    if not sharing:
        return list(releases)
    others = 0
    for w in seen:
        if not w.held:
            continue
        owner = selection.managing_policy(
            cluster.policies,
            labels=w.labels,
            ns_labels=selection.namespace_labels(w.namespace, cluster.ns_labels.get(w.namespace)),
            is_pod=w.kind is workloads.Kind.POD,
        )
        if owner is not None and owner.metadata.name in sharing:
            others += 1
    chosen = [r for r in releases if r.reason is not apply.ReleaseKind.DEADLINE]
    if not others or not chosen:
        return list(releases)
    keep = math.ceil(len(chosen) * own_held / (own_held + others))
    if keep < len(chosen):
        log.info(
            "cycle policy=%s: %d of %d chosen releases now, its share of the %d held by the "
            "policies sharing its sites; the rest next cycle",
            name,
            keep,
            len(chosen),
            own_held + others,
        )
    kept = set(map(id, chosen[:keep]))
    return [r for r in releases if r.reason is apply.ReleaseKind.DEADLINE or id(r) in kept]


def _book(
    book: placements_mod.Placements,
    built: snapshot_mod.Built,
    releases: Sequence[apply.Release],
    applied: Mapping[str, apply.Outcome],
    now_s: float,
) -> None:
    """Book the releases that took effect, at their sites (a siteless deadline release holds
    no LeafSite's capacity)."""
    book.book(
        (
            (built.held[r.workload_id], r.site)
            for r in releases
            if r.site is not None
            and applied.get(f"{r.namespace}/{r.name}") is apply.Outcome.RELEASED
            and r.workload_id in built.held
        ),
        now_s,
    )


def _totals(memory: Memory, policy: resources.HeatPolicy) -> tuple[int, int]:
    """Released and deadline-forced totals; they survive a restart through status, so the
    first cycle of a process starts from what status last said."""
    name = policy.metadata.name
    old = policy.status or resources.HeatPolicyStatus()
    released = memory.released.setdefault(name, old.released or 0)
    forced = memory.deadline_forced.setdefault(name, old.deadline_forced_releases or 0)
    return released, forced


async def _release(
    api: client.KubeApi,
    policy: resources.HeatPolicy,
    releases: Sequence[apply.Release],
    memory: Memory,
    now_s: float,
    guard: isolation.Guard,
) -> dict[str, apply.Outcome]:
    outcomes = await apply.release_all(api, releases, now_s, memory.recorder, guard=guard)
    name = policy.metadata.name
    _totals(memory, policy)
    m = memory.metrics
    applied: dict[str, apply.Outcome] = {}
    for r, result in zip(releases, outcomes, strict=True):
        applied[f"{r.namespace}/{r.name}"] = result
        if result is not apply.Outcome.RELEASED:
            continue
        memory.released[name] += 1
        m.jobs_released.labels(site=r.site or "", reason=r.reason.value).inc()
        if r.reason is apply.ReleaseKind.DEADLINE:
            memory.deadline_forced[name] += 1
            m.deadline_releases.labels(policy=name).inc()
        log.info(
            "released workload=%s/%s/%s site=%s reason=%s: %s",
            r.kind.value,
            r.namespace,
            r.name,
            r.site,
            r.reason.value,
            r.decision,
        )
    return applied


@dataclasses.dataclass(frozen=True, slots=True)
class _Warning:
    ref: isolation.Ref
    reason: str
    message: str


async def _post_warnings(
    memory: Memory, warnings: Sequence[_Warning], now_s: float, guard: isolation.Guard | None
) -> None:
    """Post Warning Events, bounded like releases; with ``guard``, a post that raises is
    recorded there, without it (the guard's own failures) only logged."""

    async def one(w: _Warning) -> None:
        post = memory.recorder.post
        kwargs: dict[str, Any] = {"reason": w.reason, "message": w.message, "now_s": now_s}
        if guard is not None:
            await guard.run_async(
                w.ref, "post an Event", None, post, w.ref.involved(), warning=True, **kwargs
            )
            return
        try:
            await post(w.ref.involved(), warning=True, **kwargs)
        except Exception:  # reporting a failure must not become one
            log.exception("event not posted: object=%s reason=%s", w.ref, w.reason)

    await apply.run_bounded(warnings, one, limit=apply.MAX_IN_FLIGHT)


async def _report(
    api: client.KubeApi,
    policy: resources.HeatPolicy,
    cluster: Cluster,
    built: snapshot_mod.Built,
    outcome: PlanOutcome,
    releases: Sequence[apply.Release],
    applied: Mapping[str, apply.Outcome],
    memory: Memory,
    now_s: float,
    guard: isolation.Guard,
    view_note: str | None = None,
) -> None:
    name = policy.metadata.name
    ref = isolation.policy_ref(name)
    m = memory.metrics
    m.plan_seconds.labels(policy=name).observe(outcome.seconds)
    if outcome.error is not None:
        m.planner_fallbacks.labels(policy=name).inc()

    warnings = [
        _Warning(isolation.workload_ref(built.held[job_id]), "InvalidHint", problem.message)
        for job_id, problems in built.problems.items()
        if job_id in built.held
        for problem in problems
    ] + [_Warning(ref, "InvalidSpec", why) for why in built.policy_problems]
    await _post_warnings(memory, warnings, now_s, guard)

    interval = policy.spec.replan_interval_s
    by_name = {ls.metadata.name: ls for ls in cluster.leafsites}

    async def write_site(site: model.Site) -> None:
        await guard.run_async(
            isolation.leafsite_ref(site.name),
            "write its status",
            None,
            _write_site_status,
            api,
            by_name[site.name],
            site,
            built,
            memory,
            now_s,
            interval,
        )

    # Bounded in parallel, as releases are: 200 sites one after another took seconds.
    await apply.run_bounded(built.snapshot.sites, write_site, limit=apply.MAX_IN_FLIGHT)

    still_held = len(built.held) - sum(1 for o in applied.values() if o is apply.Outcome.RELEASED)
    m.held_jobs.labels(policy=name).set(still_held)
    await guard.run_async(
        ref,
        "write its status",
        None,
        _write_policy_status,
        api,
        policy,
        built,
        outcome,
        len(releases),
        still_held,
        memory,
        now_s,
        view_note,
    )
    # Last, so that a failure of any step above is reported too.
    failed = [_Warning(f.ref, isolation.EVENT_REASON, f.message) for f in guard.failures]
    await _post_warnings(memory, failed, now_s, None)


async def _write_policy_status(
    api: client.KubeApi,
    policy: resources.HeatPolicy,
    built: snapshot_mod.Built,
    outcome: PlanOutcome,
    releases: int,
    still_held: int,
    memory: Memory,
    now_s: float,
    view_note: str | None = None,
) -> None:
    released, forced = _totals(memory, policy)
    message = (
        "; ".join(
            ([f"fell back to the heat-unaware plan: {outcome.error}"] if outcome.error else [])
            + ([view_note] if view_note else [])
            + list(built.policy_problems)
            + list(outcome.plan.notes)
        )
        or f"{releases} release(s) this cycle"
    )
    status = status_mod.policy_status(
        policy,
        outcome.plan,
        held=still_held,
        released_total=released,
        deadline_forced_total=forced,
        planned_ok=outcome.error is None,
        message=message,
        now_s=now_s,
        kueue_waiting=(
            sum(per.get(policy.metadata.name, 0) for per in memory.kueue_waiting.values())
            if memory.kueue_waiting
            else None
        ),
    )
    await patch_status(api, HEATPOLICIES, policy.metadata.name, status)


async def _write_site_status(
    api: client.KubeApi,
    leafsite: resources.LeafSite,
    site: model.Site,
    built: snapshot_mod.Built,
    memory: Memory,
    now_s: float,
    interval_s: float,
) -> None:
    m = memory.metrics
    result = built.results[site.name]
    if isinstance(result, readings.Rejection):
        m.metering_errors.labels(site=site.name, kind=result.kind.value).inc()
    load = status_mod.it_load_kw(site, built.snapshot.running)
    # A long gap (operator down) is not filled in with a guess; registers count it anyway.
    outcome = status_mod.update_ledger(
        leafsite,
        site,
        result,
        load_kw=load,
        previous=status_mod.newest_ledger(leafsite, memory.ledgers.get(site.name)),
        now_s=now_s,
        max_step_s=2 * interval_s,
    )
    memory.ledgers[site.name] = outcome.ledger
    if outcome.problem is not None:
        m.metering_errors.labels(site=site.name, kind=outcome.problem.value).inc()
    backup = leafsite.spec.offtaker.effective_backup
    m.record_site(
        site.name,
        outcome,
        result if isinstance(result, readings.SiteReading) else None,
        it_power_watts=load * 1000.0,
        backup_efficiency=backup.effective_efficiency,
        emission_factor_kg_per_kwh=backup.effective_emission_factor,
    )
    status = status_mod.leafsite_status(
        leafsite, site, result, load_kw=load, ledger_outcome=outcome, now_s=now_s
    )
    # The ledger whole: a figure it dropped (a register the meter no longer has) must go.
    body = status_body(status, whole=("ledger",))
    if not memory.site_writes.due(site.name, body, now_s, interval_s):
        return
    if await patch_status_body(api, LEAFSITES, site.name, body):
        memory.site_writes.wrote(site.name, body, now_s)


def status_body(status: pydantic.BaseModel, *, whole: Sequence[str] = ()) -> dict[str, Any]:
    """``status`` as a merge patch's status. The ``whole`` fields (by their YAML names) carry
    their nulls, which a merge patch takes as "remove": what they no longer hold does not
    linger from an earlier write."""
    body: dict[str, Any] = status.model_dump(mode="json", by_alias=True, exclude_none=True)
    full = status.model_dump(mode="json", by_alias=True)
    for key in whole:
        if full.get(key) is not None:
            body[key] = full[key]
    return body


async def patch_status_body(
    api: client.KubeApi, collection: str, name: str, body: Mapping[str, Any]
) -> bool:
    """Merge ``body`` into the object's status subresource; whether it was written. Failures
    are logged only, since status is rewritten every cycle."""
    try:
        await api.patch(f"{collection}/{name}/status", {"status": body})
    except client.KubeAPIError as err:
        log.warning("status not written: object=%s/%s: %s", collection, name, err)
        return False
    return True


async def patch_status(
    api: client.KubeApi,
    collection: str,
    name: str,
    status: pydantic.BaseModel,
    *,
    whole: Sequence[str] = (),
) -> bool:
    """Write ``status`` (see :func:`status_body`); whether it was written."""
    return await patch_status_body(api, collection, name, status_body(status, whole=whole))
