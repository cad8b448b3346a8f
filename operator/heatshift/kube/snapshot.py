"""Cluster objects into the planner's Snapshot, for one HeatPolicy. Pure: ``now_s`` is passed in.

:func:`build_snapshot` takes what the cycle read (LeafSites, Nodes, workloads, namespace
labels, metering results) and returns a :class:`Built`: the :class:`heatshift.model.Snapshot`
plus what the operator must remember about it — which workload each job id is, hint problems
to report as Events, and where each start deadline came from.

- Sites: the policy's ``sites`` (all LeafSites when empty); capacity is the summed allocatable
  of the schedulable Nodes matching the site's nodeSelector, overridden by ``spec.capacity``.
- Pending: workloads the policy manages that are still held (suspended Jobs, gated Pods).
- Running: every workload heatshift released to one of these sites and not finished,
  whatever policy released it, since capacity and heat are shared.
- States: a valid reading gives a heat-aware state; a rejection (or no result at all) a
  heat-unaware one: the site still takes jobs, its heat is just worth nothing.

Called by :mod:`heatshift.kube.cycle`.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping, Sequence

from heatshift import bounds, durations, model, resources
from heatshift.kube import hints as hints_mod
from heatshift.kube import isolation, selection, workloads
from heatshift.metering import readings

DEFAULT_DURATION_S = 3600.0
"""Expected run time of a job with neither an expected-duration hint nor activeDeadlineSeconds."""
MIN_REMAINING_S = 60.0
"""A running job past its expected end still holds its resources: assume another minute."""


@dataclasses.dataclass(frozen=True)
class Built:
    """A snapshot and what the operator needs to act on a plan made from it."""

    snapshot: model.Snapshot
    held: Mapping[str, workloads.Workload]
    """Held workloads of this policy, by job id."""
    problems: Mapping[str, tuple[hints_mod.HintProblem, ...]]
    """Hint problems by job id (only workloads that have some)."""
    deadline_sources: Mapping[str, str]
    """By job id: where its start deadline came from, in words."""
    results: Mapping[str, readings.SiteReading | readings.Rejection]
    """The metering result used for each site, by site name."""
    policy_problems: tuple[str, ...] = ()
    """What in the policy's spec could not be used as written, in words (for an Event)."""


def site_capacity(spec: resources.LeafSiteSpec, nodes: Sequence[workloads.Node]) -> model.Resources:
    """Summed allocatable of the schedulable nodes the site's nodeSelector matches."""
    total = model.Resources()
    for node in nodes:
        if node.schedulable and all(node.labels.get(k) == v for k, v in spec.node_selector.items()):
            total = total.plus(node.allocatable)
    return total


def policy_sites(
    policy: resources.HeatPolicy, leafsites: Sequence[resources.LeafSite]
) -> list[resources.LeafSite]:
    """The LeafSites a policy may place at (all of them when its list is empty), by name."""
    wanted = set(policy.spec.sites)
    chosen = [s for s in leafsites if not wanted or s.metadata.name in wanted]
    return sorted(chosen, key=lambda s: s.metadata.name)


def duration_of(workload: workloads.Workload, hints: hints_mod.Hints) -> float:
    """Expected run time: the hint, else activeDeadlineSeconds (an upper bound), else 1 h."""
    if hints.duration_s is not None:
        return hints.duration_s
    if workload.active_deadline_s is not None and workload.active_deadline_s > 0:
        return workload.active_deadline_s
    return DEFAULT_DURATION_S


def sla_max_delay(sla: resources.SLAClass) -> tuple[float, str | None]:
    """The class's maximum delay in seconds, and what is wrong with it in words when it cannot
    be used as written. The CRD and the models bound ``maxDelay``; should a longer one get
    through anyway (past Go's limit, or beyond :data:`bounds.MAX_DELAY`), its jobs are held
    for at most the bound, and planning goes on."""
    try:
        seconds = sla.max_delay_s
    except durations.DurationError:
        seconds = math.inf
    why = bounds.MAX_DELAY.problem(seconds)
    if why is None:
        return seconds, None
    return bounds.MAX_DELAY.high_s, (
        f"SLA class {sla.name!r}: maxDelay {sla.max_delay[:40]!r} cannot be used ({why}); its "
        f"jobs are held at most {bounds.MAX_DELAY.high}"
    )


def submitted_at(w: workloads.Workload, now_s: float) -> float:
    """When the job was submitted, for its delay: its creation time, never in the future (clock
    skew must not push a release past now) and never further back than the longest hold (so a
    bogus creation time of 1970 means "due now", with numbers the planner can use)."""
    created = w.created_s if math.isfinite(w.created_s) and w.created_s > 0 else now_s
    return min(max(created, now_s - bounds.MAX_DELAY.high_s), now_s)


def _job_request(
    w: workloads.Workload,
    spec: resources.HeatPolicySpec,
    now_s: float,
) -> tuple[model.JobRequest, tuple[hints_mod.HintProblem, ...], str]:
    hints, problems = hints_mod.parse_hints(w.annotations)
    sla_name = w.labels.get(hints_mod.SLA_CLASS)
    sla = spec.sla_class(sla_name)
    max_delay_s, _ = sla_max_delay(sla)
    if sla_name is not None and sla.name != sla_name:
        problems += (
            hints_mod.HintProblem(
                annotation=hints_mod.SLA_CLASS,
                value=sla_name,
                message=f"label {hints_mod.SLA_CLASS}={sla_name!r} names no SLA class of the "
                f"policy; class {sla.name!r} applies",
            ),
        )
    duration = duration_of(w, hints)
    submitted = submitted_at(w, now_s)
    deadline, source = hints_mod.start_deadline(
        hints, submitted_s=submitted, duration_s=duration, default_max_delay_s=max_delay_s
    )
    request = model.JobRequest(
        id=w.id,
        resources=w.resources,
        duration_s=duration,
        power_watts=hints.power_watts,
        release_s=submitted,
        deadline_s=deadline,
        allowed_sites=hints.sites,
        priority=sla.priority,
    )
    return request, problems, source


def _site(
    leafsite: resources.LeafSite,
    nodes: Sequence[workloads.Node],
    result: readings.SiteReading | readings.Rejection | None,
) -> tuple[model.Site, readings.SiteReading | readings.Rejection, model.SiteState]:
    site = leafsite.to_site(site_capacity(leafsite.spec, nodes))
    result = result or readings.Rejection(
        site=site.name, kind=readings.RejectionKind.UNAVAILABLE, message="no metering result"
    )
    # Without a reading, the tank is assumed as last seen: better than empty or full.
    status = leafsite.status
    last_tank = status.tank_energy_kwh if status and status.tank_energy_kwh else 0.0
    return site, result, readings.site_state_from(result, site, fallback_tank_kwh=last_tank)


def _running(w: workloads.Workload, site: model.Site, now_s: float) -> model.RunningJob:
    hints, _ = hints_mod.parse_hints(w.annotations)
    # A released-at time in the future (skew, a hand edit) must not hold capacity for ever.
    started = min(w.released_at_s if w.released_at_s is not None else now_s, now_s)
    end = max(started + duration_of(w, hints), now_s + MIN_REMAINING_S)
    return model.RunningJob(
        id=w.id,
        site=site.name,
        resources=w.resources,
        power_watts=site.job_watts(w.resources, hints.power_watts),
        end_s=end,
    )


def _ignoring_hints(
    w: workloads.Workload, spec: resources.HeatPolicySpec, now_s: float
) -> tuple[model.JobRequest, tuple[hints_mod.HintProblem, ...], str]:
    """The job as the policy's default class has it, for when its hints break planning."""
    bare = dataclasses.replace(w, annotations={}, labels={})
    request, _, source = _job_request(bare, spec, now_s)
    problem = hints_mod.HintProblem(
        annotation=hints_mod.PREFIX + "*",
        value="",
        message="its heatshift.dev/ annotations and SLA class label could not be used; the "
        "policy's default class applies",
    )
    return request, (problem,), source


def build_snapshot(
    policy: resources.HeatPolicy,
    *,
    policies: Sequence[resources.HeatPolicy],
    leafsites: Sequence[resources.LeafSite],
    nodes: Sequence[workloads.Node],
    all_workloads: Sequence[workloads.Workload],
    ns_labels: Mapping[str, Mapping[str, str]],
    results: Mapping[str, readings.SiteReading | readings.Rejection],
    now_s: float,
    guard: isolation.Guard | None = None,
) -> Built:
    """The snapshot ``policy`` plans on; see the module docstring for what goes in.

    Each site and each workload is one step of ``guard``: a LeafSite that cannot become a
    site is left out (its jobs go elsewhere), a held job whose hints break its request is
    planned on the policy's defaults, and only a job that cannot be planned even so is left
    out of this cycle; each such failure is recorded in ``guard`` for a Warning Event.
    """
    guard = guard or isolation.Guard()
    sites: list[model.Site] = []
    states: dict[str, model.SiteState] = {}
    used: dict[str, readings.SiteReading | readings.Rejection] = {}
    for leafsite in policy_sites(policy, leafsites):
        name = leafsite.metadata.name
        ref = isolation.leafsite_ref(name)
        made = guard.run(ref, "use this LeafSite", None, _site, leafsite, nodes, results.get(name))
        if made is not None:
            sites.append(made[0])
            used[name], states[name] = made[1], made[2]
    by_name = {s.name: s for s in sites}

    pending: list[model.JobRequest] = []
    held: dict[str, workloads.Workload] = {}
    problems: dict[str, tuple[hints_mod.HintProblem, ...]] = {}
    sources: dict[str, str] = {}
    running: list[model.RunningJob] = []
    for w in sorted(all_workloads, key=lambda w: w.id):
        ref = isolation.workload_ref(w)
        if w.running and w.site in by_name:
            site = by_name[w.site]
            job = guard.run(ref, "count it as running", None, _running, w, site, now_s)
            if job is not None:
                running.append(job)
            continue
        if not w.held:
            continue
        labels = selection.namespace_labels(w.namespace, ns_labels.get(w.namespace))
        owner = selection.managing_policy(
            policies, labels=w.labels, ns_labels=labels, is_pod=w.kind is workloads.Kind.POD
        )
        if owner is None or owner.metadata.name != policy.metadata.name:
            continue
        made_job = guard.run(
            ref, "read its hints", None, _job_request, w, policy.spec, now_s
        ) or guard.run(ref, "plan it", None, _ignoring_hints, w, policy.spec, now_s)
        if made_job is None:
            continue
        request, found, source = made_job
        pending.append(request)
        held[w.id] = w
        sources[w.id] = source
        if found:
            problems[w.id] = found

    snapshot = model.Snapshot(
        now_s=now_s,
        sites=tuple(sites),
        states=states,
        pending=tuple(pending),
        running=tuple(running),
    )
    return Built(
        snapshot=snapshot,
        held=held,
        problems=problems,
        deadline_sources=sources,
        results=used,
        policy_problems=tuple(
            why for why in (sla_max_delay(c)[1] for c in policy.spec.sla_classes) if why
        ),
    )
