"""The Kopf wiring: which events call which piece of heatshift. Thin: no decisions here.

Handlers (ids are part of the contract with the Helm chart and the e2e suite):

- ``plan`` (daemon, one per HeatPolicy): runs :func:`heatshift.kube.cycle.run_cycle` every
  ``spec.planning.replanInterval``, and a few seconds after new held work appears (a Job
  suspended by its owner, or one the webhook just held). The planner itself runs in a worker
  thread under the solver's time limit; the cycle falls back to the heat-unaware plan when it
  fails, so start deadlines hold with no metering and no solver.
- ``hold-jobs`` / ``hold-pods`` (mutating admission, served at ``/hold-jobs`` and
  ``/hold-pods``): suspend new Jobs, gate new bare Pods, that a HeatPolicy selects
  (:mod:`heatshift.kube.admission`). failurePolicy Ignore: with the operator down, new work
  simply runs unmanaged.
- the webhook decides from the HeatPolicy and Namespace informers every replica runs
  (:class:`heatshift.kube.informer.Informers`): a standby, whose Kopf watches peering pauses,
  answers it too.
- ``view_leafsites``, ``view_heatpolicies``, ``view_nodes`` (indexes, with
  ``namespace_labels``) and the Job and bare-Pod informers started at start-up
  (:mod:`heatshift.kube.informer`): the watched view every planning cycle reads
  (:mod:`heatshift.kube.view`); no cycle lists anything. An informer wakes the planning
  daemons when a held Job or Pod appears.
- ``validate-leafsite`` / ``validate-heatpolicy`` (one function): an unusable spec gets a
  ``Ready=False`` condition saying why, and a PermanentError (Kopf stops retrying until the spec
  changes).

Everything the handlers share lives in :class:`State`, in Kopf's ``memo``. :func:`operate`
logs in once (:mod:`heatshift.kube.login`, as kubectl does) before Kopf starts; the ``login``
handler hands Kopf that same credential, renewed when it expires or is refused, so Kopf's
watches and heatshift's own requests always act as the same user. Called by Kopf; started by
``heatshift run`` (:func:`run`).
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import random
import tempfile
import threading
import time
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import kopf
import pydantic

from heatshift import heap, resources, tlscert
from heatshift import metrics as metrics_mod
from heatshift.kube import (
    admission,
    client,
    cycle,
    events,
    informer,
    meters,
    probes,
    view,
    workloads,
)
from heatshift.kube import login as login_mod
from heatshift.kube import status as status_mod

log = logging.getLogger(__name__)

GROUP, VERSION = resources.API_GROUP, resources.API_VERSION
PLAN_ID = "plan"
HOLD_JOBS_ID = "hold-jobs"
HOLD_PODS_ID = "hold-pods"
QUICK_REPLAN_S = 3.0
"""Wait this long after new held work appears before re-planning, to batch a burst."""
RETRY_S = 15.0
"""Re-plan this soon after a cycle that could not read the cluster."""
DEFAULT_PEERING = "heatshift"
WATCH_TIMEOUT_S = 600
"""Kopf's watch requests end after this and are re-opened."""


@dataclasses.dataclass(frozen=True)
class RunOptions:
    """What ``heatshift run`` was asked for; see its ``--help``."""

    namespaces: tuple[str, ...] = ()
    metrics_port: int | None = 8080
    health_port: int | None = 8081
    webhook_port: int = 9443
    webhook_addr: str = "0.0.0.0"
    webhook_host: str | None = None
    webhook_cert_dir: Path | None = None
    webhook_url: str | None = None
    manage_webhook_config: bool = False
    kubeconfig: Path | None = None
    """``--kubeconfig``; None: KUBECONFIG, in-cluster, ~/.kube/config (see kube.login)."""
    context: str | None = None
    peering: str = DEFAULT_PEERING
    standalone: bool = False
    priority: int | None = None
    quick_replan_s: float = QUICK_REPLAN_S
    metering_timeout_s: float = cycle.METERING_TIMEOUT_S
    meter_factory: meters.SourceFactory = meters.default_source
    kueue: bool = False
    """``--kueue``: also answer Kueue admission checks (:mod:`heatshift.kueue`)."""


@dataclasses.dataclass
class State:
    """Shared by all handlers of one operator process (Kopf ``memo.heatshift``)."""

    options: RunOptions
    metrics: metrics_mod.Metrics
    session: login_mod.Session
    logins: int = 0
    api: client.Client | None = None
    memory: cycle.Memory | None = None
    wake: dict[str, asyncio.Event] = dataclasses.field(default_factory=dict)
    kueue_wake: dict[str, asyncio.Event] = dataclasses.field(default_factory=dict)
    """One per heatshift AdmissionCheck (:mod:`heatshift.kueue.handlers`)."""
    heard: view.Heard = dataclasses.field(default_factory=view.Heard)
    """When the API server last told the watched view about each resource."""
    scratch: tempfile.TemporaryDirectory[str] | None = None
    informers: informer.Informers | None = None
    """The view's Jobs and bare Pods, and the webhook's HeatPolicies and Namespaces, from
    heatshift's own informers (kube.informer), in every replica."""
    probes: probes.ProbeServer | None = None
    """/healthz and /readyz (kube.probes): ready once the informers have listed everything."""


def _state(memo: Any) -> State:
    state = memo["heatshift"]
    assert isinstance(state, State)
    return state


def _ready(state: State) -> tuple[client.Client, cycle.Memory]:
    if state.api is None or state.memory is None:
        raise kopf.TemporaryError("the operator is still starting", delay=2)
    return state.api, state.memory


# --- credentials -------------------------------------------------------------------------------


def connection_info(credential: login_mod.Credential) -> kopf.ConnectionInfo:
    """heatshift's credential as Kopf takes it, so Kopf and heatshift see the same cluster."""
    return kopf.ConnectionInfo(
        server=credential.server,
        ca_path=credential.ca_path,
        insecure=credential.insecure,
        scheme=credential.scheme,
        token=credential.token,
        certificate_path=credential.certificate_path,
        private_key_path=credential.private_key_path,
        proxy_url=credential.proxy_url,
        # Kopf logs in again before this passes (and after any 401), through this handler.
        expiration=credential.expiration,
    )


@kopf.on.login()
async def login(memo: Any, **_: Any) -> kopf.ConnectionInfo:
    state = _state(memo)
    if state.logins:
        # Kopf asks again because the credential expired or was refused: fetch a fresh one.
        try:
            await state.session.renew()
        except client.KubeAPIError as err:
            raise kopf.TemporaryError(str(err), delay=RETRY_S) from err
    state.logins += 1
    return connection_info(await state.session.credential())


# --- startup and shutdown ----------------------------------------------------------------------


class _FixedURL:
    """Serve webhooks locally but advertise ``url`` (e.g. a Service) in the configuration."""

    def __init__(self, server: kopf.WebhookServer, url: str) -> None:
        self._server, self._url = server, url.rstrip("/")

    async def __call__(self, fn: Any) -> AsyncIterator[Any]:
        async for config in self._server(fn):
            yield {**config, "url": self._url}


def _webhook_server(options: RunOptions, scratch: Path) -> Any:
    if options.webhook_cert_dir is not None:
        cert, key = options.webhook_cert_dir / "tls.crt", options.webhook_cert_dir / "tls.key"
    else:
        # Development only: the chart mounts a real certificate.
        hosts = [h for h in (options.webhook_host, "localhost", "127.0.0.1") if h]
        cert, key = tlscert.write_self_signed(scratch, hosts)
    server = kopf.WebhookServer(
        addr=options.webhook_addr,
        port=options.webhook_port,
        host=options.webhook_host,
        certfile=str(cert),
        pkeyfile=str(key),
        cafile=str(cert) if options.webhook_cert_dir is None else None,
    )
    return _FixedURL(server, options.webhook_url) if options.webhook_url else server


@kopf.on.startup()
async def startup(settings: kopf.OperatorSettings, memo: Any, **_: Any) -> None:
    state = _state(memo)
    options = state.options
    # Kopf's own bookkeeping annotations carry our prefix, not Kopf's default one.
    settings.persistence.progress_storage = kopf.AnnotationsProgressStorage(prefix=GROUP)
    settings.persistence.diffbase_storage = kopf.AnnotationsDiffBaseStorage(prefix=GROUP)
    settings.persistence.finalizer = f"{GROUP}/finalizer"
    # Handler log lines are not turned into Events; heatshift posts its own, in words.
    settings.posting.level = logging.WARNING
    # Watches that the server or a load balancer silently drops are renewed, not waited on.
    settings.watching.server_timeout = WATCH_TIMEOUT_S
    settings.watching.client_timeout = WATCH_TIMEOUT_S + 60
    settings.watching.connect_timeout = 30
    # Kopf's start-up lists are left unpaged (settings.watching.chunk_size): Kopf indexes each
    # page before fetching the next, and a page token expires after ~5 minutes (410 Gone),
    # which stops the operator; tens of thousands of Jobs take that long to index on 2 cores.
    state.scratch = tempfile.TemporaryDirectory(prefix="heatshift-webhook-")
    settings.admission.server = _webhook_server(options, Path(state.scratch.name))
    settings.admission.managed = f"{GROUP}.webhooks" if options.manage_webhook_config else None
    state.api = state.session.api
    # Every replica keeps its Jobs and Pods current, a standby too: it takes over warm.
    informers = state.informers = informer.Informers(
        state.api, options.namespaces, state.heard, on_held=lambda: _wake(state, None)
    )
    informers.start()
    if options.health_port is not None:
        state.probes = probes.ProbeServer(informers.not_listed)
        await state.probes.start("0.0.0.0", options.health_port)
    state.memory = cycle.Memory(recorder=events.Recorder(state.api), metrics=state.metrics)
    log.info(
        "heatshift started: cluster=%s as %s namespaces=%s webhook_port=%d managed_webhooks=%s",
        state.api.server,
        state.session.who,
        ",".join(options.namespaces) or "all",
        options.webhook_port,
        options.manage_webhook_config,
    )


@kopf.on.cleanup()
async def cleanup(memo: Any, **_: Any) -> None:
    state = _state(memo)
    if state.probes is not None:
        await state.probes.stop()
    if state.informers is not None:
        await state.informers.stop()
    if state.scratch is not None:
        state.scratch.cleanup()


# --- indexes: the watched view every planning cycle reads (kube.view) --------------------------
#
# Each stores the small record kube.view makes of an object, never the body. The view's Jobs
# and Pods come from heatshift's own informers instead (kube.informer).


@kopf.index("", "v1", "namespaces", id="namespace_labels")
def namespace_labels_index(
    name: str, body: kopf.Body, memo: Any, **_: Any
) -> dict[str, dict[str, str]]:
    _heard(memo, "namespaces")
    return {name: view.namespace_record(body)}


def _heard(memo: Any, kind: str) -> None:
    _state(memo).heard.saw(kind, time.time())


@kopf.index(GROUP, VERSION, "leafsites", id="view_leafsites")
def view_leafsites(name: str, body: kopf.Body, memo: Any, **_: Any) -> dict[str, view.Parsed]:
    _heard(memo, "leafsites")
    return {name: view.site_record(body)}


@kopf.index(GROUP, VERSION, "heatpolicies", id="view_heatpolicies")
def view_heatpolicies(name: str, body: kopf.Body, memo: Any, **_: Any) -> dict[str, view.Parsed]:
    _heard(memo, "heatpolicies")
    return {name: view.policy_record(body)}


@kopf.index("", "v1", "nodes", id="view_nodes")
def view_nodes(name: str, body: kopf.Body, memo: Any, **_: Any) -> dict[str, workloads.Node]:
    _heard(memo, "nodes")
    return {name: view.node_record(body)}


def _informed(state: State) -> informer.Informers:
    if state.informers is None:
        raise kopf.TemporaryError("the operator is still starting", delay=2)
    return state.informers


def _view(state: State, api: client.KubeApi, indexes: Mapping[str, Any]) -> view.WatchedReader:
    """The watched view over the indexes Kopf passed to a handler (by their ids)."""
    return view.WatchedReader(
        view.Indexes(
            leafsites=indexes["view_leafsites"],
            heatpolicies=indexes["view_heatpolicies"],
            nodes=indexes["view_nodes"],
            namespaces=indexes["namespace_labels"],
            jobs=_informed(state).jobs_store,
            pods=_informed(state).pods_store,
        ),
        state.heard,
        api,
    )


# --- admission: hold new work ------------------------------------------------------------------


def _wake(state: State, policy: str | None) -> None:
    for name, event in state.wake.items():
        if policy is None or name == policy:
            event.set()


Decide = Callable[
    [Mapping[str, Any], Sequence[resources.HeatPolicy], Mapping[str, str]],
    tuple[dict[str, Any] | None, str | None],
]


def _admission_inputs(
    state: State, namespace: str
) -> tuple[list[resources.HeatPolicy], dict[str, str]] | None:
    """The policies and the namespace's labels the webhook decides on; None if not known yet.

    From the informers every replica runs (:class:`heatshift.kube.informer.Informers`), not
    from Kopf indexes: a standby answers the webhook too (the Service picks a replica at
    random), and peering pauses a standby's Kopf watches."""
    if state.informers is None:
        return None
    try:
        return state.informers.admission_inputs(namespace)
    except informer.NotSynced:
        return None


async def _hold(
    decide: Decide,
    body: kopf.Body,
    patch: kopf.Patch,
    memo: Any,
    logger: logging.Logger | logging.LoggerAdapter[Any],
) -> None:
    obj = dict(body)
    meta = obj.get("metadata") or {}
    ns = str(meta.get("namespace") or "")
    state = _state(memo)
    inputs = _admission_inputs(state, ns)
    if inputs is None:
        # Not knowing which policy wants it, it runs now: compute never waits on heatshift.
        return
    changes, policy = decide(obj, *inputs)
    if changes is None:
        return
    for key, value in changes.items():
        patch[key] = value
    logger.info(
        "held new %s %s/%s for HeatPolicy %s",
        obj.get("kind", "object"),
        ns or "?",
        meta.get("name") or meta.get("generateName", "?"),
        policy,
    )
    _wake(state, policy)


_ADMISSION: dict[str, Any] = {
    "operations": ["CREATE"],
    "ignore_failures": True,  # failurePolicy Ignore: without us, work runs unmanaged
    "side_effects": False,
}


@kopf.on.mutate("batch", "v1", "jobs", id=HOLD_JOBS_ID, **_ADMISSION)
async def hold_jobs(
    body: kopf.Body,
    patch: kopf.Patch,
    memo: Any,
    logger: logging.Logger | logging.LoggerAdapter[Any],
    **_: Any,
) -> None:
    await _hold(admission.hold_job, body, patch, memo, logger)


@kopf.on.mutate("", "v1", "pods", id=HOLD_PODS_ID, **_ADMISSION)
async def hold_pods(
    body: kopf.Body,
    patch: kopf.Patch,
    memo: Any,
    logger: logging.Logger | logging.LoggerAdapter[Any],
    **_: Any,
) -> None:
    await _hold(admission.hold_pod, body, patch, memo, logger)


# --- validation: say in words why a spec cannot be used ----------------------------------------


async def _validate(
    spec_model: type[resources.LeafSiteSpec] | type[resources.HeatPolicySpec],
    collection: str,
    kind: str,
    name: str,
    spec: Mapping[str, Any],
    status: Mapping[str, Any],
    meta: Mapping[str, Any],
    memo: Any,
) -> None:
    """Ready=False with the validation message, and a PermanentError, for an unusable spec."""
    try:
        spec_model.model_validate(dict(spec))
    except pydantic.ValidationError as err:
        message = f"{kind} {name} cannot be used: {err}"
        old = [
            resources.Condition.model_validate(c)
            for c in (status.get("conditions") or [])
            if isinstance(c, Mapping)
        ]
        gen = meta.get("generation")
        conditions = status_mod.invalid_status(
            old, message, time.time(), gen if isinstance(gen, int) else None
        )
        api = _state(memo).api
        if api is not None:
            body = {"status": {"conditions": [c.to_dict() for c in conditions]}}
            try:
                await api.patch(f"{collection}/{name}/status", body)
            except client.KubeAPIError as patch_err:
                log.warning("condition not written: %s/%s: %s", collection, name, patch_err)
        raise kopf.PermanentError(message) from err


_SPECS: dict[
    str, tuple[type[resources.LeafSiteSpec] | type[resources.HeatPolicySpec], str, str]
] = {
    "leafsites": (resources.LeafSiteSpec, cycle.LEAFSITES, "LeafSite"),
    "heatpolicies": (resources.HeatPolicySpec, cycle.HEATPOLICIES, "HeatPolicy"),
}


@kopf.on.resume(GROUP, VERSION, "leafsites", id="validate-leafsite")
@kopf.on.create(GROUP, VERSION, "leafsites", id="validate-leafsite")
@kopf.on.update(GROUP, VERSION, "leafsites", id="validate-leafsite", field="spec")
@kopf.on.resume(GROUP, VERSION, "heatpolicies", id="validate-heatpolicy")
@kopf.on.create(GROUP, VERSION, "heatpolicies", id="validate-heatpolicy")
@kopf.on.update(GROUP, VERSION, "heatpolicies", id="validate-heatpolicy", field="spec")
async def validate(
    resource: kopf.Resource,
    name: str,
    spec: Mapping[str, Any],
    status: Mapping[str, Any],
    meta: Mapping[str, Any],
    memo: Any,
    **_: Any,
) -> None:
    spec_model, collection, kind = _SPECS[resource.plural]
    await _validate(spec_model, collection, kind, name, spec, status, meta, memo)
    # A new or changed site or policy is planned at once, not at the old interval's end.
    _wake(_state(memo), None)


# --- the planning loop -------------------------------------------------------------------------


def _interval(spec: Mapping[str, Any]) -> float:
    try:
        return resources.HeatPolicySpec.model_validate(dict(spec)).replan_interval_s
    except pydantic.ValidationError:
        return RETRY_S


async def _pause(wake: asyncio.Event, interval_s: float, quick_s: float) -> None:
    """Sleep until the interval ends, or shortly after new held work is noticed."""
    try:
        await asyncio.wait_for(wake.wait(), timeout=interval_s)
    except TimeoutError:
        return
    await asyncio.sleep(quick_s)


@kopf.daemon(GROUP, VERSION, "heatpolicies", id=PLAN_ID, cancellation_timeout=1.0)
async def plan_loop(
    name: str,
    spec: Mapping[str, Any],
    stopped: kopf.DaemonStopped,
    memo: Any,
    logger: logging.Logger | logging.LoggerAdapter[Any],
    **kwargs: Any,
) -> None:
    state = _state(memo)
    api, memory = _ready(state)
    # Kopf starts no handler before every index has listed its objects once, and the Job and
    # Pod informers are waited for here, so the first cycle plans from a complete view.
    await _informed(state).wait_synced()
    reader = _view(state, api, kwargs)
    wake = state.wake.setdefault(name, asyncio.Event())
    try:
        while not stopped:
            wake.clear()
            interval = _interval(spec)
            try:
                await cycle.run_cycle(
                    api,
                    name,
                    memory,
                    now_s=time.time(),
                    namespaces=state.options.namespaces,
                    meter_factory=state.options.meter_factory,
                    metering_timeout_s=state.options.metering_timeout_s,
                    reader=reader,
                )
            except cycle.PolicyNotFound:
                return
            except cycle.PolicyInvalid as err:
                # validate-heatpolicy has written the condition; retry when the spec changes.
                raise kopf.PermanentError(str(err)) from err
            except client.KubeAPIError as err:
                # Not retryable (e.g. 403) means missing RBAC: an error worth an alert.
                level = logging.WARNING if err.retryable else logging.ERROR
                logger.log(level, "planning cycle could not read the cluster, retrying: %s", err)
                interval = min(interval, RETRY_S)
            except Exception:
                # A bug in one cycle must not end the loop: deadlines depend on the next one.
                logger.exception("planning cycle failed, retrying in %gs", RETRY_S)
                interval = min(interval, RETRY_S)
            await _pause(wake, interval, state.options.quick_replan_s)
    finally:
        state.wake.pop(name, None)


# --- running it --------------------------------------------------------------------------------


def peering_priority(options: RunOptions) -> int:
    """The given priority, else a random one: Kopf pauses *every* replica while two share
    a priority, so replicas started alike must not tie. The highest one acts."""
    if options.priority is not None:
        return options.priority
    return random.SystemRandom().randint(1, 2**31 - 1)


async def operate(
    options: RunOptions,
    *,
    metrics: metrics_mod.Metrics | None = None,
    stop_flag: asyncio.Event | threading.Event | None = None,
    ready_flag: asyncio.Event | threading.Event | None = None,
) -> None:
    """Run the operator in the current event loop until ``stop_flag`` is set (or a signal).

    Logs in first, so that a credential problem stops it at once with one line
    (:class:`client.KubeCredentialError`) rather than inside Kopf's retries."""
    if options.kueue:
        # Imported here: the Kueue wiring builds on this module's handlers.
        from heatshift.kueue import handlers as kueue_handlers

        kueue_handlers.register(kopf.get_default_registry())
    session = await login_mod.connect(options.kubeconfig, options.context)
    async with session:
        state = State(options=options, metrics=metrics or metrics_mod.Metrics(), session=session)
        if options.metrics_port is not None:
            state.metrics.serve(options.metrics_port)
        await kopf.operator(
            standalone=options.standalone,
            priority=peering_priority(options),
            # A named peering is mandatory in Kopf: without its peering object every replica
            # pauses rather than act alone. Standalone runs need none.
            peering_name=None if options.standalone else options.peering,
            clusterwide=not options.namespaces,
            namespaces=list(options.namespaces),
            memo=kopf.Memo(heatshift=state),
            stop_flag=stop_flag,
            ready_flag=ready_flag,
        )


def run(options: RunOptions) -> None:
    """``heatshift run``: the operator in a fresh event loop, until interrupted."""
    heap.limit_arenas()  # before any worker thread exists
    asyncio.run(operate(options))
