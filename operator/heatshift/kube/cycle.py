"""One planning cycle for one HeatPolicy: read, meter, snapshot, plan, decide, release, report.

The phases, numbered in :func:`run_cycle` and each timed in the log line that closes the cycle:

1. **read**: LeafSites, HeatPolicies, Nodes, Jobs (and Pods if a policy holds bare Pods),
   namespace labels (:func:`read_cluster`).
2. **meter**: one reading or rejection per site of the policy, time-bounded
   (:func:`heatshift.kube.meters.fetch_results`).
3. **snapshot**: :func:`heatshift.kube.snapshot.build_snapshot`.
4. **plan**: the production planner in a worker thread, bounded by the solver's time limit
   plus a margin; if it raises or overruns, the heat-unaware default plan instead
   (:func:`make_plan`).
5. **decide**: the deadline guard once more against the *operator's* next decision, which may
   be further off than the planner's step, and the releases that start before it, each with
   its reason in words (:func:`releases_for`).
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
import dataclasses
import logging
import time
from collections.abc import Mapping, Sequence
from typing import Any

import pydantic

from heatshift import metrics as metrics_mod
from heatshift import model, resources
from heatshift.kube import apply, client, events, isolation, meters, workloads
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

LEAFSITES = client.path_for(resources.API_GROUP, resources.API_VERSION, "leafsites")
HEATPOLICIES = client.path_for(resources.API_GROUP, resources.API_VERSION, "heatpolicies")


class PolicyInvalid(Exception):
    """The HeatPolicy's spec cannot be used; the message says why, in words."""


class PolicyNotFound(Exception):
    """The HeatPolicy does not exist (any more)."""


@dataclasses.dataclass(frozen=True)
class Cluster:
    """What one cycle read from the API server."""

    leafsites: tuple[resources.LeafSite, ...]
    policies: tuple[resources.HeatPolicy, ...]
    invalid: Mapping[str, str]
    """``Kind/name`` -> why its spec cannot be used."""
    raw_policies: Mapping[str, Mapping[str, Any]]
    nodes: tuple[workloads.Node, ...]
    workloads: tuple[workloads.Workload, ...]
    ns_labels: Mapping[str, Mapping[str, str]]


def _parse(
    objs: Sequence[Mapping[str, Any]], kind: str, invalid: dict[str, str]
) -> list[resources.Resource]:
    out: list[resources.Resource] = []
    for obj in objs:
        body = {k: obj[k] for k in ("apiVersion", "kind", "metadata", "spec", "status") if k in obj}
        body.setdefault("apiVersion", resources.GROUP_VERSION)
        body.setdefault("kind", kind)
        try:
            out.append(resources.parse_resource(body))
        except resources.ResourceError as err:
            name = (obj.get("metadata") or {}).get("name", "?")
            invalid[f"{kind}/{name}"] = str(err)
    return out


async def read_cluster(api: client.KubeApi, namespaces: Sequence[str] = ()) -> Cluster:
    """Everything a cycle needs; ``namespaces`` limits Jobs and Pods (empty: all)."""
    invalid: dict[str, str] = {}
    raw_sites, raw_policies, raw_nodes = await asyncio.gather(
        api.list_objects(LEAFSITES),
        api.list_objects(HEATPOLICIES),
        api.list_objects(client.path_for("", "v1", "nodes")),
    )
    leafsites = [
        r for r in _parse(raw_sites, "LeafSite", invalid) if isinstance(r, resources.LeafSite)
    ]
    heat_policies = [
        r
        for r in _parse(raw_policies, "HeatPolicy", invalid)
        if isinstance(r, resources.HeatPolicy)
    ]
    scopes: list[str | None] = list(namespaces) or [None]
    jobs: list[dict[str, Any]] = []
    pods: list[dict[str, Any]] = []
    want_pods = any(p.spec.hold_bare_pods for p in heat_policies)
    for ns in scopes:
        jobs += await api.list_objects(client.path_for("batch", "v1", "jobs", namespace=ns))
        if want_pods:
            pods += await api.list_objects(client.path_for("", "v1", "pods", namespace=ns))
    ns_labels: dict[str, Mapping[str, str]] = {}
    try:
        for ns_obj in await api.list_objects(client.path_for("", "v1", "namespaces")):
            meta = ns_obj.get("metadata") or {}
            ns_labels[str(meta.get("name"))] = dict(meta.get("labels") or {})
    except client.KubeAPIError as err:
        # Without namespace labels, selectors can still match on the namespace's name label.
        log.warning("namespaces unreadable, selecting by name only: %s", err)
    found = [workloads.from_job(j) for j in jobs]
    found += [workloads.from_pod(p) for p in pods if workloads.is_bare_pod(p)]
    return Cluster(
        leafsites=tuple(leafsites),
        policies=tuple(heat_policies),
        invalid=invalid,
        raw_policies={str((p.get("metadata") or {}).get("name")): p for p in raw_policies},
        nodes=tuple(workloads.from_node(n) for n in raw_nodes),
        workloads=tuple(found),
        ns_labels=ns_labels,
    )


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
        out.append(
            apply.Release(
                kind=w.kind,
                namespace=w.namespace,
                name=w.name,
                site=p.site,
                node_selector=leafsites[p.site].spec.node_selector,
                decision=decision,
                reason=kind,
                policy=policy,
            )
        )
    for u in outcome.plan.unschedulable:
        stuck = by_id.get(u.job_id)
        if stuck is None or stuck.deadline_s >= next_decision_s or u.job_id not in built.held:
            continue
        w = built.held[u.job_id]
        # Compute before heat: a job no site can take still starts by its deadline, placed by
        # the cluster's own scheduler.
        out.append(
            apply.Release(
                kind=w.kind,
                namespace=w.namespace,
                name=w.name,
                site=None,
                node_selector={},
                decision=f"no LeafSite can take it ({u.reason[:200]}); why now: its start "
                f"deadline {_when_words(stuck.deadline_s)} falls before the next decision",
                reason=apply.ReleaseKind.DEADLINE,
                policy=policy,
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
    ledgers: dict[str, resources.LedgerStatus] = dataclasses.field(default_factory=dict)
    """The ledger last written per site: newer than a status read before another policy's
    cycle wrote it, so a stretch of time is counted once however many policies cover a site."""


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
) -> CycleResult:
    """One cycle for ``policy_name``; see the module docstring. Raises PolicyInvalid,
    PolicyNotFound, or KubeAPIError when the cluster cannot be read. Past the read, a failure
    of one object's step is that object's alone (:class:`isolation.Guard`): it gets a Warning
    Event and the cycle goes on."""
    timings: dict[str, float] = {}
    guard = isolation.Guard()

    # 1. read: the cluster as the API server has it now.
    t = time.monotonic()
    cluster = await read_cluster(api, namespaces)
    policy = policy_from(cluster, policy_name)
    timings["read"] = time.monotonic() - t

    # 2. meter: one reading or rejection per site, bounded in time.
    t = time.monotonic()
    sites = snapshot_mod.policy_sites(policy, cluster.leafsites)
    results = await meters.fetch_results(
        api, sites, now_s, timeout_s=metering_timeout_s, factory=meter_factory
    )
    timings["meter"] = time.monotonic() - t

    # 3. snapshot: sites, held and running jobs; per site and per job, guarded.
    t = time.monotonic()
    built = snapshot_mod.build_snapshot(
        policy,
        policies=cluster.policies,
        leafsites=sites,
        nodes=cluster.nodes,
        all_workloads=cluster.workloads,
        ns_labels=cluster.ns_labels,
        results=results,
        now_s=now_s,
        guard=guard,
    )
    timings["snapshot"] = time.monotonic() - t

    # 4. plan: the production planner, or the heat-unaware plan if it fails or overruns.
    cfg = policy.spec.planner_config()
    outcome = await make_plan(built.snapshot, cfg, timeout_s=cfg.time_limit_s + PLANNER_MARGIN_S)
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
    timings["decide"] = time.monotonic() - t

    applied: dict[str, apply.Outcome] = {}
    if apply_plan:
        # 6. release: concurrently, bounded, every deadline release first.
        t = time.monotonic()
        applied = await _release(api, policy, releases, memory, now_s, guard)
        timings["release"] = time.monotonic() - t

        # 7. report: warnings, statuses, metrics; then every failed step as an Event.
        t = time.monotonic()
        await _report(api, policy, cluster, built, outcome, releases, applied, memory, now_s, guard)
        timings["report"] = time.monotonic() - t
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
        policy_name, built, outcome, tuple(releases), applied, timings, tuple(guard.failures)
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
    for site in built.snapshot.sites:
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
) -> None:
    released, forced = _totals(memory, policy)
    message = (
        "; ".join(
            ([f"fell back to the heat-unaware plan: {outcome.error}"] if outcome.error else [])
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
    await patch_status(api, LEAFSITES, site.name, status, whole=("ledger",))


async def patch_status(
    api: client.KubeApi,
    collection: str,
    name: str,
    status: pydantic.BaseModel,
    *,
    whole: Sequence[str] = (),
) -> None:
    """Merge ``status`` into the object's status subresource; failures are logged only,
    since status is rewritten every cycle. The ``whole`` fields (by their YAML names) are
    written with their nulls, which a merge patch takes as "remove": what they no longer
    hold does not linger from an earlier write."""
    body = {"status": status.model_dump(mode="json", by_alias=True, exclude_none=True)}
    full = status.model_dump(mode="json", by_alias=True)
    for key in whole:
        if full.get(key) is not None:
            body["status"][key] = full[key]
    try:
        await api.patch(f"{collection}/{name}/status", body)
    except client.KubeAPIError as err:
        log.warning("status not written: object=%s/%s: %s", collection, name, err)
