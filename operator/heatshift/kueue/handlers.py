"""The Kopf wiring of the Kueue admission check; registered only by ``heatshift run --kueue``.

Handlers (ids are part of the contract with the chart and the e2e suite):

- ``kueue_workloads`` (index): every Kueue Workload with admission checks, reduced to a
  :class:`heatshift.kueue.objects.KueueWorkload` (pod sets, owner, check states);
- the LeafSites, Nodes, HeatPolicies and namespaces come from the indexes of
  :mod:`heatshift.handlers` (``view_leafsites``, ``view_nodes``, ``view_heatpolicies``,
  ``namespace_labels``), shared with the planning cycles, so the check reads the cluster from
  watches alone;
- ``kueue-check`` (daemon, one per AdmissionCheck whose controllerName is
  ``heatshift.dev/heat``): sets it ``Active``, then decides its Pending Workloads
  (:func:`heatshift.kueue.controller.decide_check`) whenever one appears, and every
  :data:`DECIDE_EVERY_S` in any case;
- ``kueue-notice-workloads``: wakes the daemons when a Workload's check becomes Pending.

With peering, only the active replica runs the daemons, as for the planning daemons.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Mapping
from typing import Any

import kopf

from heatshift import handlers as core
from heatshift.kube import client, view
from heatshift.kueue import controller, objects

log = logging.getLogger(__name__)

CHECK_ID = "kueue-check"
DECIDE_EVERY_S = 30.0
"""Decide at least this often, whatever was noticed: a missed event never strands a check."""
QUICK_S = 1.0
"""After a Workload is noticed, wait this long to decide a burst together."""


def _wakes(memo: Any) -> dict[str, asyncio.Event]:
    # In the shared State: Kopf gives each object's handlers a shallow copy of the memo.
    return core._state(memo).kueue_wake


def _values(index: Mapping[str, Any] | None, kind: type[Any]) -> list[Any]:
    if index is None:
        return []
    return [item for store in index.values() for item in store if isinstance(item, kind)]


# --- indexes ---------------------------------------------------------------------------------


def workloads_index(body: kopf.Body, **_: Any) -> dict[str, objects.KueueWorkload] | None:
    w = objects.from_workload(body)
    return {w.key: w} if w.checks else None


# --- the check -------------------------------------------------------------------------------


def _is_ours(spec: Mapping[str, Any], **_: Any) -> bool:
    return objects.is_ours(spec)


def _has_pending(body: kopf.Body, **_: Any) -> bool:
    w = objects.from_workload(body)
    return any(c.state == objects.CheckState.PENDING for c in w.checks) and w.quota_reserved


def notice_workloads(memo: Any, **_: Any) -> None:
    for event in _wakes(memo).values():
        event.set()


def _view(cluster: view.Cluster, indexes: Mapping[str, Any]) -> controller.View:
    """The round's view: the planning cycles' watched view (sites, policies, nodes, namespace
    labels, Jobs and Pods; :mod:`heatshift.kube.view`) and this check's Workload index."""
    return controller.View(
        policies=cluster.policies,
        leafsites=cluster.leafsites,
        nodes=cluster.nodes,
        ns_labels=cluster.ns_labels,
        kueue_workloads=_values(indexes.get("kueue_workloads"), objects.KueueWorkload),
        plain_workloads=cluster.workloads,
    )


async def check_loop(
    name: str,
    meta: Mapping[str, Any],
    status: Mapping[str, Any],
    stopped: kopf.DaemonStopped,
    memo: Any,
    logger: logging.Logger | logging.LoggerAdapter[Any],
    **indexes: Any,
) -> None:
    state = core._state(memo)
    api, memory = core._ready(state)
    generation = meta.get("generation")
    try:
        await controller.mark_active(
            api, name, status, generation if isinstance(generation, int) else None, time.time()
        )
    except client.KubeAPIError as err:
        raise kopf.TemporaryError(
            f"AdmissionCheck {name} not marked Active: {err}", delay=5
        ) from err
    logger.info("deciding Kueue admission check %s", name)
    # The same watched view as the planning cycles, complete before the first round.
    await core._informed(state).wait_synced()
    reader = core._view(state, api, indexes)
    wake = _wakes(memo).setdefault(name, asyncio.Event())
    owners: dict[str, controller.OwnerMeta] = {}
    try:
        while not stopped:
            wake.clear()
            try:
                now = time.time()
                await controller.decide_check(
                    api,
                    name,
                    _view(await reader.read(now), indexes),
                    memory.recorder,
                    now_s=now,
                    meter_factory=state.options.meter_factory,
                    metering_timeout_s=state.options.metering_timeout_s,
                    owners=owners,
                    shared=memory,
                )
            except Exception:
                # A bug in one round must not end the loop: deadlines depend on the next one.
                logger.exception("admission check round failed, retrying")
            try:
                await asyncio.wait_for(wake.wait(), timeout=DECIDE_EVERY_S)
                await asyncio.sleep(QUICK_S)
            except TimeoutError:
                pass
    finally:
        _wakes(memo).pop(name, None)
        # A check no longer decided leaves nothing for the planning cycles to count.
        memory.kueue_admitted.pop(name, None)
        memory.kueue_waiting.pop(name, None)


_REGISTERED: set[int] = set()


def register(registry: kopf.OperatorRegistry) -> None:
    """Add the check's handlers to ``registry`` (once per registry)."""
    if id(registry) in _REGISTERED:
        return
    _REGISTERED.add(id(registry))
    group, version = objects.GROUP, objects.VERSION
    kopf.index(group, version, objects.WORKLOADS, id="kueue_workloads", registry=registry)(
        workloads_index
    )
    kopf.on.event(
        group,
        version,
        objects.WORKLOADS,
        id="kueue-notice-workloads",
        when=_has_pending,
        registry=registry,
    )(notice_workloads)
    kopf.daemon(
        group,
        version,
        objects.ADMISSION_CHECKS,
        id=CHECK_ID,
        when=_is_ours,
        cancellation_timeout=1.0,
        registry=registry,
    )(check_loop)
