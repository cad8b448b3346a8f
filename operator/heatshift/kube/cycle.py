"""One planning cycle for one HeatPolicy: read, meter, snapshot, plan, release, report.

The phases, each timed in the log line that closes the cycle:

1. **read**: LeafSites, HeatPolicies, Nodes, Jobs (and Pods if a policy holds bare Pods),
   namespace labels (:func:`read_cluster`).
2. **meter**: one reading or rejection per site of the policy, time-bounded
   (:func:`heatshift.kube.meters.fetch_results`).
3. **snapshot**: :func:`heatshift.kube.snapshot.build_snapshot`.
4. **plan**: the production planner in a worker thread, bounded by the solver's time limit
   plus a margin; if it raises or overruns, the heat-unaware default plan instead
   (:func:`make_plan`). Then the deadline guard once more against the *operator's* next
   decision, which may be further off than the planner's step (:func:`releases_for`).
5. **apply**: releases that start before the next decision; warnings for malformed hints;
   LeafSite and HeatPolicy status; metrics.

With ``apply=False`` (``heatshift plan --dry-run``) phase 5 is skipped and nothing is changed.
Called by the Kopf wiring on each policy's timer and by the CLI.
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
from heatshift.kube import apply, client, events, meters, workloads
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


def releases_for(
    built: snapshot_mod.Built,
    outcome: PlanOutcome,
    *,
    leafsites: Mapping[str, resources.LeafSite],
    policy: str,
    next_decision_s: float,
) -> list[apply.Release]:
    """What to start now: placements starting before the next decision, after the guard,
    plus deadline releases without a site for jobs no LeafSite can ever take."""
    snap = built.snapshot
    placements, _ = greedy.enforce_deadlines(snap, outcome.plan.placements, next_decision_s)
    by_id = {j.id: j for j in snap.pending}
    out: list[apply.Release] = []
    for p in sorted(placements, key=lambda p: (p.start_s, p.job_id)):
        if p.start_s >= next_decision_s or p.job_id not in built.held:
            continue
        w, job = built.held[p.job_id], by_id[p.job_id]
        due = job.deadline_s < next_decision_s
        # A job that could not wait for the next decision was released by its deadline,
        # whatever else the plan said about the site.
        if due or p.reason.startswith(DEADLINE_PREFIX):
            kind = apply.ReleaseKind.DEADLINE
        elif outcome.error is not None or not snap.states[p.site].heat_aware:
            kind = apply.ReleaseKind.HEAT_UNAWARE
        else:
            kind = apply.ReleaseKind.HEAT
        if due:
            why_now = (
                f"its start deadline {_when_words(job.deadline_s)} (from "
                f"{built.deadline_sources[p.job_id]}) falls before the next decision"
            )
        elif p.start_s <= snap.now_s + 1e-6:
            why_now = f"the plan starts it now; it could wait until {_when_words(job.deadline_s)}"
        else:
            # The planner's slots are finer than the operator's re-planning: a start planned
            # before the next decision happens now rather than late.
            why_now = (
                f"the plan starts it at {_when_words(p.start_s)}, before the next decision at "
                f"{_when_words(next_decision_s)}"
            )
        fallback = f" ({outcome.error}: heat-unaware plan)" if outcome.error else ""
        out.append(
            apply.Release(
                kind=w.kind,
                namespace=w.namespace,
                name=w.name,
                site=p.site,
                node_selector=leafsites[p.site].spec.node_selector,
                decision=f"why {p.site}: {p.reason}{fallback}; why now: {why_now}",
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
                decision=f"no LeafSite can take it ({u.reason}); why now: its start deadline "
                f"{_when_words(stuck.deadline_s)} falls before the next decision",
                reason=apply.ReleaseKind.DEADLINE,
                policy=policy,
            )
        )
    return out


@dataclasses.dataclass
class Memory:
    """What the operator remembers between cycles (per process; rebuilt after a restart
    from the totals in status)."""

    recorder: events.Recorder
    metrics: metrics_mod.Metrics
    released: dict[str, int] = dataclasses.field(default_factory=dict)
    deadline_forced: dict[str, int] = dataclasses.field(default_factory=dict)
    heat: dict[str, tuple[float, float]] = dataclasses.field(default_factory=dict)
    heat_at_s: dict[str, float] = dataclasses.field(default_factory=dict)


@dataclasses.dataclass(frozen=True)
class CycleResult:
    """One cycle's outcome: what it saw, planned and did."""

    policy: str
    built: snapshot_mod.Built
    outcome: PlanOutcome
    releases: tuple[apply.Release, ...]
    applied: Mapping[str, apply.Outcome]
    timings: Mapping[str, float]


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
    PolicyNotFound, or KubeAPIError when the cluster cannot be read."""
    timings: dict[str, float] = {}
    t = time.monotonic()
    cluster = await read_cluster(api, namespaces)
    policy = policy_from(cluster, policy_name)
    timings["read"] = time.monotonic() - t

    t = time.monotonic()
    sites = snapshot_mod.policy_sites(policy, cluster.leafsites)
    results = await meters.fetch_results(
        api, sites, now_s, timeout_s=metering_timeout_s, factory=meter_factory
    )
    timings["meter"] = time.monotonic() - t

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
    )
    timings["snapshot"] = time.monotonic() - t

    cfg = policy.spec.planner_config()
    interval = policy.spec.replan_interval_s
    outcome = await make_plan(built.snapshot, cfg, timeout_s=cfg.time_limit_s + PLANNER_MARGIN_S)
    timings["plan"] = outcome.seconds
    releases = releases_for(
        built,
        outcome,
        leafsites={s.metadata.name: s for s in sites},
        policy=policy_name,
        next_decision_s=now_s + interval,
    )

    applied: dict[str, apply.Outcome] = {}
    if apply_plan:
        t = time.monotonic()
        applied = await _apply(api, policy, cluster, built, outcome, releases, memory, now_s)
        timings["apply"] = time.monotonic() - t
    log.info(
        "cycle policy=%s held=%d running=%d sites=%d heat_aware=%d status=%s releases=%d "
        "applied=%s fallback=%s %s",
        policy_name,
        len(built.snapshot.pending),
        len(built.snapshot.running),
        len(built.snapshot.sites),
        sum(1 for s in built.snapshot.states.values() if s.heat_aware),
        outcome.plan.status.value,
        len(releases),
        "yes" if apply_plan else "dry-run",
        outcome.error or "no",
        " ".join(f"{k}_s={v:.3f}" for k, v in timings.items()),
    )
    return CycleResult(policy_name, built, outcome, tuple(releases), applied, timings)


async def _apply(
    api: client.KubeApi,
    policy: resources.HeatPolicy,
    cluster: Cluster,
    built: snapshot_mod.Built,
    outcome: PlanOutcome,
    releases: Sequence[apply.Release],
    memory: Memory,
    now_s: float,
) -> dict[str, apply.Outcome]:
    name = policy.metadata.name
    m = memory.metrics
    m.plan_seconds.labels(policy=name).observe(outcome.seconds)
    if outcome.error is not None:
        m.planner_fallbacks.labels(policy=name).inc()

    # Totals survive a restart through status: start from what status last said.
    old = policy.status or resources.HeatPolicyStatus()
    released = memory.released.setdefault(name, old.released or 0)
    forced = memory.deadline_forced.setdefault(name, old.deadline_forced_releases or 0)
    applied: dict[str, apply.Outcome] = {}
    for r in releases:
        result = await apply.apply_release(api, r, now_s, memory.recorder)
        applied[f"{r.namespace}/{r.name}"] = result
        if result is not apply.Outcome.RELEASED:
            continue
        released += 1
        m.jobs_released.labels(site=r.site or "", reason=r.reason.value).inc()
        if r.reason is apply.ReleaseKind.DEADLINE:
            forced += 1
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
    memory.released[name], memory.deadline_forced[name] = released, forced

    for job_id, problems in built.problems.items():
        w = built.held.get(job_id)
        if w is None:
            continue
        involved = _involved(w)
        for problem in problems:
            await memory.recorder.post(
                involved, reason="InvalidHint", message=problem.message, now_s=now_s, warning=True
            )

    policy_obj = {
        "apiVersion": resources.GROUP_VERSION,
        "kind": "HeatPolicy",
        "metadata": dict(cluster.raw_policies.get(name, {}).get("metadata") or {"name": name}),
    }
    for why in built.policy_problems:
        await memory.recorder.post(
            policy_obj,
            reason="InvalidSpec",
            message=why,
            now_s=now_s,
            warning=True,
        )

    await _write_site_statuses(api, cluster, built, memory, now_s, policy.spec.replan_interval_s)
    still_held = len(built.held) - sum(1 for o in applied.values() if o is apply.Outcome.RELEASED)
    m.held_jobs.labels(policy=name).set(still_held)
    message = (
        "; ".join(
            ([f"fell back to the heat-unaware plan: {outcome.error}"] if outcome.error else [])
            + list(built.policy_problems)
            + list(outcome.plan.notes)
        )
        or f"{len(releases)} release(s) this cycle"
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
    await patch_status(api, HEATPOLICIES, name, status)
    return applied


def _involved(w: workloads.Workload) -> dict[str, Any]:
    api_version = "batch/v1" if w.kind is workloads.Kind.JOB else "v1"
    return {
        "apiVersion": api_version,
        "kind": w.kind.value,
        "metadata": {"name": w.name, "namespace": w.namespace, "uid": w.uid},
    }


async def _write_site_statuses(
    api: client.KubeApi,
    cluster: Cluster,
    built: snapshot_mod.Built,
    memory: Memory,
    now_s: float,
    interval_s: float,
) -> None:
    snap = built.snapshot
    by_name = {ls.metadata.name: ls for ls in cluster.leafsites}
    m = memory.metrics
    for site in snap.sites:
        leafsite = by_name[site.name]
        result = built.results[site.name]
        if isinstance(result, readings.Rejection):
            m.metering_errors.labels(site=site.name, kind=result.kind.value).inc()
        load = status_mod.it_load_kw(site, snap.running)
        old = leafsite.status or resources.LeafSiteStatus()
        delivered, dumped = memory.heat.setdefault(
            site.name, (old.heat_delivered_kwh or 0.0, old.heat_dumped_kwh or 0.0)
        )
        # Count each stretch of time once, however many policies cover the site; a long gap
        # (operator down) is not filled in with a guess.
        last = memory.heat_at_s.get(site.name, now_s)
        step = min(max(now_s - last, 0.0), 2 * interval_s)
        d_kwh, x_kwh = status_mod.heat_step(site, result, load, step)
        memory.heat[site.name] = (delivered + d_kwh, dumped + x_kwh)
        memory.heat_at_s[site.name] = now_s
        m.heat_delivered.labels(site=site.name).inc(d_kwh)
        m.heat_dumped.labels(site=site.name).inc(x_kwh)
        status = status_mod.leafsite_status(
            leafsite,
            site,
            result,
            load_kw=load,
            delivered_kwh=delivered + d_kwh,
            dumped_kwh=dumped + x_kwh,
            now_s=now_s,
        )
        await patch_status(api, LEAFSITES, site.name, status)


async def patch_status(
    api: client.KubeApi, collection: str, name: str, status: pydantic.BaseModel
) -> None:
    """Merge ``status`` into the object's status subresource; failures are logged only,
    since status is rewritten every cycle."""
    body = {"status": status.model_dump(mode="json", by_alias=True, exclude_none=True)}
    try:
        await api.patch(f"{collection}/{name}/status", body)
    except client.KubeAPIError as err:
        log.warning("status not written: object=%s/%s: %s", collection, name, err)
