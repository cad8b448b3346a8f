"""One HeatPolicy's plan as admission check verdicts for its Kueue Workloads. Pure.

The plan comes from the same snapshot and planner as for plain Jobs
(:func:`heatshift.kube.snapshot.build_snapshot`, :func:`heatshift.kube.cycle.make_plan`), and
the same release rule decides what starts now (:func:`heatshift.kube.cycle.releases_for`,
deadline guard included). A Workload it would release gets ``Ready`` (with its site's
nodeSelector, or none for a deadline release no site can take); every other held Workload
gets ``Retry`` with ``requeueAfterSeconds`` until its planned start, at most one planning
interval. Kueue (v0.17, measured in e2e/test_pods.py) keeps the Workload's quota reserved
until then, then evicts and requeues it, which reserves the quota again and asks the check
once more: held work counts against its ClusterQueue's quota while it waits, as under any
admission check (Kueue reserves quota before it asks the checks).

The next decision about a Workload in Retry comes when Kueue has requeued it and reserved
its quota again: :data:`REQUEUE_SLACK_S` after the requeue time. A Workload whose start
deadline falls before that is made Ready now, so heatshift never makes one miss it.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping

from heatshift import model, resources
from heatshift.kube import apply, cycle, workloads
from heatshift.kube import snapshot as snapshot_mod
from heatshift.kueue import objects

REQUEUE_SLACK_S = 30.0
"""Time Kueue may take to requeue a Workload in Retry and reserve its quota again."""
MIN_REQUEUE_S = 5
"""Shortest Retry: a planned start sooner than this is simply made Ready next time."""


@dataclasses.dataclass(frozen=True, slots=True)
class Verdict:
    """What heatshift answers for one Workload's check."""

    key: str
    """``namespace/name`` of the Workload."""
    state: objects.CheckState
    message: str
    site: str | None = None
    node_selector: Mapping[str, str] = dataclasses.field(default_factory=dict)
    requeue_after_s: int | None = None
    reason: apply.ReleaseKind | None = None
    """Why it was made Ready (heat, deadline, heat-unaware); None for a Retry."""


def _key(w: workloads.Workload) -> str:
    return f"{w.namespace}/{w.name}"


def _requeue_s(until_s: float, now_s: float, interval_s: float) -> int:
    wait = min(until_s, now_s + interval_s) - now_s
    return int(max(MIN_REQUEUE_S, math.floor(wait))) if math.isfinite(wait) else int(interval_s)


def verdicts(
    built: snapshot_mod.Built,
    outcome: cycle.PlanOutcome,
    *,
    leafsites: Mapping[str, resources.LeafSite],
    policy: str,
    now_s: float,
    interval_s: float,
) -> list[Verdict]:
    """A verdict for every held Workload of ``built``."""
    releases = cycle.releases_for(
        built,
        outcome,
        leafsites=leafsites,
        policy=policy,
        next_decision_s=now_s + interval_s + REQUEUE_SLACK_S,
    )
    out: list[Verdict] = []
    released: set[str] = set()
    for r in releases:
        key = f"{r.namespace}/{r.name}"
        released.add(key)
        where = f"at LeafSite {r.site}" if r.site else "without a site"
        out.append(
            Verdict(
                key=key,
                state=objects.CheckState.READY,
                message=f"heatshift HeatPolicy {policy}: admitted {where} "
                f"({r.reason.value}): {r.decision}",
                site=r.site,
                node_selector=dict(r.node_selector),
                reason=r.reason,
            )
        )
    planned = {p.job_id: p for p in outcome.plan.placements}
    stuck = {u.job_id: u for u in outcome.plan.unschedulable}
    jobs = {j.id: j for j in built.snapshot.pending}
    for job_id, w in sorted(built.held.items()):
        if _key(w) in released:
            continue
        job = jobs[job_id]
        deadline = (
            f"start deadline {workloads.format_time(job.deadline_s)} "
            f"(from {built.deadline_sources.get(job_id, 'its SLA class')})"
        )
        placement: model.Placement | None = planned.get(job_id)
        if placement is not None:
            wait = _requeue_s(placement.start_s, now_s, interval_s)
            why = (
                f"planned at LeafSite {placement.site} from "
                f"{workloads.format_time(placement.start_s)}: {placement.reason}"
            )
        else:
            wait = _requeue_s(job.deadline_s - REQUEUE_SLACK_S, now_s, interval_s)
            found = stuck.get(job_id)
            why = f"no LeafSite can take it now ({found.reason if found else 'not planned'})"
        out.append(
            Verdict(
                key=_key(w),
                state=objects.CheckState.RETRY,
                message=f"heatshift HeatPolicy {policy}: held for heat, {why}; asked again in "
                f"{wait}s; {deadline}",
                requeue_after_s=wait,
            )
        )
    return out


def unmanaged(key: str) -> Verdict:
    """A Workload no HeatPolicy selects: admitted at once, heat-unaware."""
    return Verdict(
        key=key,
        state=objects.CheckState.READY,
        message="no HeatPolicy selects this workload: admitted at once, placed by the cluster",
        reason=apply.ReleaseKind.HEAT_UNAWARE,
    )
