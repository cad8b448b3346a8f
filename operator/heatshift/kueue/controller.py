"""The admission check's decisions, with the I/O around them.

:func:`decide_check` is one decision round for one heatshift AdmissionCheck:

1. the Workloads waiting for it (quota reserved, check Pending), from the operator's index;
2. each one's owner (the Job, JobSet, ... it stands for) read once, for the SLA-class label
   and the ``heatshift.dev/*`` hints: no per-kind code, every kind Kueue supports is one GET;
3. per HeatPolicy that selects some of them: metering, the snapshot (Workloads this check
   admitted to a site, and the Jobs and Pods the planning cycles released to one, count as
   running there), the plan, the verdicts
   (:func:`heatshift.kueue.decide.verdicts`); a Workload no policy selects is Ready at once;
4. each verdict written as heatshift's entry of ``status.admissionChecks``, by server-side
   apply as :data:`heatshift.kueue.objects.FIELD_MANAGER` (Kueue applies its own fields as its
   own managers, so neither overwrites the other); an Event on the owner for every Ready and
   for every hint that could not be used.

Failures stay per object (:class:`heatshift.kube.isolation.Guard`): an owner that cannot be
read is planned on its policy's defaults, a status that cannot be written is retried next
round. In the operator, steps 3 and 4 run while no planning cycle places work (the cycles'
lock, :mod:`heatshift.kube.placements`), and the Workloads admitted to sites are left in the
cycles' memory for them to count. Called by :mod:`heatshift.kueue.handlers`.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
from collections.abc import Mapping, Sequence
from typing import Any, Protocol

from heatshift import resources
from heatshift.kube import apply, client, cycle, events, isolation, meters, selection, workloads
from heatshift.kube import snapshot as snapshot_mod
from heatshift.kueue import decide, objects

log = logging.getLogger(__name__)

ADMITTED_REASON = "HeatshiftAdmitted"


class Api(client.KubeApi, Protocol):
    """The verbs the check uses: heatshift's own plus server-side apply."""

    async def apply(self, path: str, body: client.JsonObject, *, field_manager: str) -> Any: ...


@dataclasses.dataclass(frozen=True)
class View:
    """What one round decides on, from the operator's watches."""

    policies: Sequence[resources.HeatPolicy]
    leafsites: Sequence[resources.LeafSite]
    nodes: Sequence[workloads.Node]
    ns_labels: Mapping[str, Mapping[str, str]]
    kueue_workloads: Sequence[objects.KueueWorkload]
    plain_workloads: Sequence[workloads.Workload] = ()
    """The watched view's Jobs and Pods (:mod:`heatshift.kube.view`): those heatshift released
    to a site hold capacity there for the check's plans too."""


@dataclasses.dataclass(frozen=True, slots=True)
class OwnerMeta:
    labels: Mapping[str, str]
    annotations: Mapping[str, str]


NO_OWNER = OwnerMeta({}, {})


async def _owner_meta(api: client.KubeApi, w: objects.KueueWorkload) -> OwnerMeta:
    if w.owner is None:
        return NO_OWNER
    obj = await api.get(w.owner.path(w.namespace))
    meta = workloads.as_dict(obj.get("metadata"))
    strings = workloads.as_dict
    return OwnerMeta(
        labels={str(k): str(v) for k, v in strings(meta.get("labels")).items()},
        annotations={str(k): str(v) for k, v in strings(meta.get("annotations")).items()},
    )


def owner_ref(w: objects.KueueWorkload) -> isolation.Ref:
    """Where Events about a Workload go: its owner, which is what its user looks at."""
    if w.owner is None:
        return isolation.ref_for(workloads.Kind.WORKLOAD, w.namespace, w.name, w.uid)
    o = w.owner
    return isolation.Ref(o.api_version, o.kind, o.name, w.namespace, o.uid)


@dataclasses.dataclass(frozen=True)
class Round:
    """What one round decided and wrote."""

    verdicts: tuple[decide.Verdict, ...]
    written: int
    failures: tuple[isolation.Failure, ...]


async def decide_check(
    api: Api,
    check_name: str,
    view: View,
    recorder: events.Recorder,
    *,
    now_s: float,
    meter_factory: meters.SourceFactory = meters.default_source,
    metering_timeout_s: float = cycle.METERING_TIMEOUT_S,
    owners: dict[str, OwnerMeta] | None = None,
    shared: cycle.Memory | None = None,
) -> Round:
    """One decision round for ``check_name``; see the module docstring. ``owners`` (by
    Workload uid) carries the owners' labels and annotations from round to round. With
    ``shared`` (the planning cycles' memory) the round plans and writes while no cycle places
    work, counts the Jobs the cycles released, and leaves the Workloads it admitted to sites
    for the cycles to count (:attr:`heatshift.kube.cycle.Memory.kueue_admitted`)."""
    guard = isolation.Guard()
    mine = [w for w in view.kueue_workloads if w.check(check_name) is not None]
    waiting = [w for w in mine if w.pending(check_name)]
    cache = owners if owners is not None else {}
    if not waiting:
        if shared is not None:
            shared.kueue_admitted[check_name] = _at_sites(mine, check_name, cache, (), now_s)
            shared.kueue_waiting[check_name] = {}
        return Round((), 0, ())
    async with shared.placements.lock if shared is not None else contextlib.nullcontext():
        found = await _decide_and_write(
            api,
            check_name,
            view,
            recorder,
            mine,
            waiting,
            cache,
            guard,
            now_s,
            meter_factory=meter_factory,
            metering_timeout_s=metering_timeout_s,
            shared=shared,
        )
    for f in guard.failures:
        try:
            await recorder.post(
                f.ref.involved(),
                reason=isolation.EVENT_REASON,
                message=f.message,
                now_s=now_s,
                warning=True,
            )
        except client.KubeAPIError as err:
            log.warning("event not posted: object=%s: %s", f.ref, err)
    return found


def _at_sites(
    mine: Sequence[objects.KueueWorkload],
    check_name: str,
    cache: Mapping[str, OwnerMeta],
    ready: Sequence[decide.Verdict],
    now_s: float,
) -> tuple[workloads.Workload, ...]:
    """The Workloads this check admitted to a site and still running, with those just made
    Ready (Kueue has not admitted them yet) as if running from now."""
    ready_at = {v.key: v.site for v in ready if v.site is not None}
    out: list[workloads.Workload] = []
    for w in mine:
        meta = cache.get(w.uid, NO_OWNER)
        planned = objects.as_workload(
            w, check_name, labels=meta.labels, annotations=meta.annotations
        )
        site = ready_at.get(w.key)
        if site is not None and planned.held:
            planned = dataclasses.replace(planned, held=False, site=site, released_at_s=now_s)
        if planned.running:
            out.append(planned)
    return tuple(out)


async def _decide_and_write(
    api: Api,
    check_name: str,
    view: View,
    recorder: events.Recorder,
    mine: Sequence[objects.KueueWorkload],
    waiting: Sequence[objects.KueueWorkload],
    cache: dict[str, OwnerMeta],
    guard: isolation.Guard,
    now_s: float,
    *,
    meter_factory: meters.SourceFactory,
    metering_timeout_s: float,
    shared: cycle.Memory | None,
) -> Round:
    by_key = {w.key: w for w in mine}

    async def owner_of(w: objects.KueueWorkload) -> OwnerMeta:
        found = await guard.run_async(owner_ref(w), "read its hints", NO_OWNER, _owner_meta, api, w)
        return found or NO_OWNER

    # Waiting Workloads' owners are read every round (hints may change while they wait);
    # running ones' once, for how long they hold their site (their expected duration).
    running = [w for w in mine if not w.finished and not w.pending(check_name)]
    to_read = [*waiting, *(w for w in running if w.uid not in cache)]
    read = await apply.run_bounded(to_read, owner_of, limit=apply.MAX_IN_FLIGHT)
    cache.update((one.uid, meta) for one, meta in zip(to_read, read, strict=True))
    live = {w.uid for w in mine if not w.finished}
    for uid in [u for u in cache if u not in live]:
        del cache[uid]
    as_planned = [
        objects.as_workload(
            w,
            check_name,
            labels=cache.get(w.uid, NO_OWNER).labels,
            annotations=cache.get(w.uid, NO_OWNER).annotations,
        )
        for w in mine
    ]

    # The plain Jobs and Pods heatshift released hold their sites' capacity here too.
    plain = view.plain_workloads
    if shared is not None:
        plain = shared.placements.overlay(plain, now_s)
    planned_with_plain = [*as_planned, *(w for w in plain if w.running)]

    out: list[decide.Verdict] = []
    waiting_for_heat: dict[str, int] = {}
    problems: dict[str, list[str]] = {}
    managed: dict[str, list[str]] = {}
    for planned in as_planned:
        if not planned.held:
            continue
        ns = planned.namespace
        policy = selection.managing_policy(
            view.policies,
            labels=planned.labels,
            ns_labels=selection.namespace_labels(ns, view.ns_labels.get(ns)),
            is_pod=False,
        )
        if policy is None:
            out.append(decide.unmanaged(f"{ns}/{planned.name}"))
        else:
            managed.setdefault(policy.metadata.name, []).append(planned.id)
    for policy in sorted(view.policies, key=lambda p: p.metadata.name):
        if policy.metadata.name not in managed:
            continue
        sites = snapshot_mod.policy_sites(policy, view.leafsites)
        results = await meters.fetch_results(
            api, sites, now_s, timeout_s=metering_timeout_s, factory=meter_factory
        )
        built = snapshot_mod.build_snapshot(
            policy,
            policies=view.policies,
            leafsites=sites,
            nodes=view.nodes,
            all_workloads=planned_with_plain,
            ns_labels=view.ns_labels,
            results=results,
            now_s=now_s,
            guard=guard,
        )
        cfg = policy.spec.planner_config()
        outcome = await cycle.make_plan(
            built.snapshot, cfg, timeout_s=cfg.time_limit_s + cycle.PLANNER_MARGIN_S
        )
        decided = decide.verdicts(
            built,
            outcome,
            leafsites={s.metadata.name: s for s in sites},
            policy=policy.metadata.name,
            now_s=now_s,
            interval_s=policy.spec.replan_interval_s,
        )
        out += decided
        waiting_for_heat[policy.metadata.name] = sum(
            1 for v in decided if v.state is objects.CheckState.RETRY
        )
        for job_id, found in built.problems.items():
            held = built.held.get(job_id)
            if held is not None:
                problems[f"{held.namespace}/{held.name}"] = [p.message for p in found]
        log.info(
            "kueue check=%s policy=%s waiting=%d running=%d plan=%s fallback=%s",
            check_name,
            policy.metadata.name,
            len(built.held),
            len(built.snapshot.running),
            outcome.plan.status.value,
            outcome.error or "no",
        )

    async def write(v: decide.Verdict) -> bool:
        w = by_key[v.key]
        found = problems.get(v.key, [])
        done = await guard.run_async(
            owner_ref(w),
            "write its admission check",
            False,
            _write,
            api,
            recorder,
            check_name,
            w,
            v,
            found,
            now_s,
        )
        return bool(done)

    written = await apply.run_bounded(out, write, limit=apply.MAX_IN_FLIGHT)
    if shared is not None:
        ready = [v for v, done in zip(out, written, strict=True) if done]
        shared.kueue_admitted[check_name] = _at_sites(mine, check_name, cache, ready, now_s)
        shared.kueue_waiting[check_name] = waiting_for_heat
    return Round(tuple(out), sum(written), tuple(guard.failures))


async def _write(
    api: Api,
    recorder: events.Recorder,
    check_name: str,
    w: objects.KueueWorkload,
    v: decide.Verdict,
    problems: Sequence[str],
    now_s: float,
) -> bool:
    message = "; ".join([v.message, *problems])
    entry = objects.check_state(
        w,
        check_name,
        v.state,
        message,
        now_s,
        node_selector=v.node_selector,
        site=v.site,
        requeue_after_s=v.requeue_after_s,
    )
    await api.apply(
        objects.workload_status_path(w),
        objects.apply_body(w, entry),
        field_manager=objects.FIELD_MANAGER,
    )
    log.info(
        "kueue check=%s workload=%s state=%s site=%s: %s",
        check_name,
        v.key,
        v.state.value,
        v.site,
        v.message,
    )
    ref = owner_ref(w).involved()
    for problem in problems:
        await recorder.post(ref, reason="InvalidHint", message=problem, now_s=now_s, warning=True)
    if v.state is objects.CheckState.READY:
        await recorder.post(ref, reason=ADMITTED_REASON, message=v.message, now_s=now_s)
    return True


async def mark_active(
    api: client.KubeApi,
    name: str,
    status: Mapping[str, Any],
    generation: int | None,
    now_s: float,
) -> bool:
    """Set the AdmissionCheck's ``Active=True`` condition; False when it already was."""
    conditions = [
        workloads.as_dict(c) for c in workloads.as_list(workloads.as_dict(status).get("conditions"))
    ]
    new = objects.active_condition(conditions, generation, now_s)
    if new is None:
        return False
    path = client.path_for(
        objects.GROUP, objects.VERSION, objects.ADMISSION_CHECKS, name=name, subresource="status"
    )
    await api.patch(path, {"status": {"conditions": new}})
    return True
