"""The Jobs and bare Pods of the watched view, kept by informers of heatshift's own.

An informer lists a collection once, then watches it from the list's resourceVersion, as
client-go's informers do: every event replaces the object's record, a finished or deleted
object leaves, a bookmark only says the watch is alive. A watch the server ends is re-opened
from the last resourceVersion seen; a 410 (the server no longer has it) or any other failure
lists again after a short, growing pause, and the list replaces the whole store, so a gap
never leaves a stale object behind.

Why not Kopf indexes, as for the small resources: a batch cluster keeps tens of thousands of
Jobs (and Pods), and Kopf does not start a handler before every index has taken every object
through its own per-object machinery, which does not finish starting at that size (measured
in issue #9). Here a Job is one record function call; 50,000 of them take about a second.

Each informer exposes :attr:`Informer.store`, key (namespace) -> records, the shape the view
reads (:class:`heatshift.kube.view.Indexes`), and :attr:`Informer.synced`, set after the first
complete list. Called by :mod:`heatshift.handlers`, one informer per resource and namespace.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator, Callable, Iterable, Mapping
from typing import Any, Generic, Protocol, TypeVar

from heatshift import heap, resources
from heatshift.kube import client, selection, view, workloads

log = logging.getLogger(__name__)

WATCH_S = 300.0
"""Each watch request asks the server to end it after this; it is re-opened at once."""
FIRST_PAUSE_S = 1.0
LONGEST_PAUSE_S = 30.0
"""After a failure, list again after a pause doubling from the first to the longest."""

R = TypeVar("R")


class WatchApi(Protocol):
    """What an informer needs of :class:`heatshift.kube.client.Client`."""

    def list_pages(self, path: str) -> AsyncIterator[tuple[list[client.JsonObject], str]]: ...

    def watch(
        self, path: str, resource_version: str, *, timeout_s: float
    ) -> AsyncIterator[client.JsonObject]: ...


def _namespace(body: Mapping[str, Any]) -> str:
    return str((body.get("metadata") or {}).get("namespace") or "")


def _name(body: Mapping[str, Any]) -> str:
    return str((body.get("metadata") or {}).get("name") or "")


def _uid(body: Mapping[str, Any]) -> str:
    meta = body.get("metadata") or {}
    return str(meta.get("uid") or f"{meta.get('namespace')}/{meta.get('name')}")


class _Store(Mapping[str, Iterable[Any]]):
    """Namespace -> records, read live by the view (no copy per cycle)."""

    def __init__(self) -> None:
        self.by_ns: dict[str, dict[str, Any]] = {}

    def __getitem__(self, key: str) -> Iterable[Any]:
        return self.by_ns[key].values()

    def __iter__(self) -> Any:
        return iter(self.by_ns)

    def __len__(self) -> int:
        return len(self.by_ns)


class Informer(Generic[R]):
    """One collection (``path``) kept as ``record(body)`` per object; None drops it."""

    def __init__(
        self,
        api: WatchApi,
        path: str,
        kind: str,
        record: Callable[[Mapping[str, Any]], R | None],
        heard: view.Heard,
        *,
        on_change: Callable[[R], None] | None = None,
        key: Callable[[Mapping[str, Any]], str] | None = None,
        watch_s: float = WATCH_S,
        first_pause_s: float = FIRST_PAUSE_S,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.api = api
        self.path = path
        self.kind = kind
        """The view's name for the resource (``jobs``, ``pods``), for :class:`view.Heard`."""
        self.record = record
        self.heard = heard
        self.on_change = on_change
        """Called with each new or changed record (e.g. to wake the planning loops)."""
        self.key = key or _namespace
        """What the store groups records by: the namespace, or e.g. a Namespace's own name."""
        self.watch_s = watch_s
        self.first_pause_s = first_pause_s
        self.clock = clock
        self.store = _Store()
        self.synced = asyncio.Event()
        """Set once the first list is in the store: the view is complete from then on."""
        self.lists = 0
        """How many times the collection was listed (1 unless a watch broke)."""
        self._where: dict[str, str] = {}  # uid -> namespace it is stored under

    def _insert(
        self, by_ns: dict[str, dict[str, Any]], where: dict[str, str], body: Mapping[str, Any]
    ) -> R | None:
        """``body``'s record into ``by_ns`` (and its namespace into ``where``); None if dropped."""
        found = self.record(body)
        if found is None:
            return None
        uid, ns = _uid(body), self.key(body)
        by_ns.setdefault(ns, {})[uid] = found
        where[uid] = ns
        return found

    def _put(self, body: Mapping[str, Any]) -> None:
        self._drop(_uid(body))
        found = self._insert(self.store.by_ns, self._where, body)
        if found is not None and self.on_change is not None:
            self.on_change(found)

    def _drop(self, uid: str) -> None:
        ns = self._where.pop(uid, None)
        if ns is None:
            return
        records = self.store.by_ns.get(ns)
        if records is not None:
            records.pop(uid, None)
            if not records:
                del self.store.by_ns[ns]

    async def _list(self) -> str:
        fresh = _Store()
        where: dict[str, str] = {}
        version = ""
        # Page by page: only records are kept, so the collection's JSON (tens of thousands
        # of Jobs with their managedFields) is never in memory at once.
        async for items, page_version in self.api.list_pages(self.path):
            version = page_version
            for body in items:
                self._insert(fresh.by_ns, where, body)
        # One swap: a reader sees the old store or the new one, never half of each.
        self.store.by_ns, self._where = fresh.by_ns, where
        self.lists += 1
        heap.trim()  # the pages' JSON is garbage now (heatshift.heap)
        self.heard.saw(self.kind, self.clock())
        if self.on_change is not None:
            for records in fresh.by_ns.values():
                for found in records.values():
                    self.on_change(found)
        self.synced.set()
        log.info(
            "informer %s: listed %d objects at resourceVersion %s", self.path, len(where), version
        )
        return version

    async def _watch(self, version: str) -> str:
        """Events from ``version`` until the server ends the watch; the last version seen."""
        async for event in self.api.watch(self.path, version, timeout_s=self.watch_s):
            body = event.get("object") or {}
            version = str((body.get("metadata") or {}).get("resourceVersion") or version)
            self.heard.saw(self.kind, self.clock())
            kind = event.get("type")
            if kind in ("ADDED", "MODIFIED"):
                self._put(body)
            elif kind == "DELETED":
                self._drop(_uid(body))
        return version

    async def run(self) -> None:
        """List, then watch, for ever (until cancelled)."""
        pause = self.first_pause_s
        while True:
            try:
                version = await self._list()
                pause = self.first_pause_s
                while True:
                    started = time.monotonic()
                    version = await self._watch(version)
                    if time.monotonic() - started < self.first_pause_s:
                        # A server ending watches at once must not be asked again in a loop.
                        await asyncio.sleep(self.first_pause_s)
            except client.KubeGone as err:
                log.info("informer %s: %s; listing again", self.path, err)
            except client.KubeAPIError as err:
                log.warning("informer %s: %s; listing again in %.0fs", self.path, err, pause)
                await asyncio.sleep(pause)
                pause = min(pause * 2, LONGEST_PAUSE_S)
            except Exception:
                # A bug must not end the view for good: the planning loops depend on it.
                log.exception("informer %s failed; listing again in %.0fs", self.path, pause)
                await asyncio.sleep(pause)
                pause = min(pause * 2, LONGEST_PAUSE_S)


class NotSynced(Exception):
    """An informer has not listed its collection yet (the operator is starting)."""


def _policy_record(body: Mapping[str, Any]) -> resources.HeatPolicy | None:
    # Parsed as the view parses it; an invalid policy holds nothing (its status says why).
    policy = view.policy_record(body).resource
    return policy if isinstance(policy, resources.HeatPolicy) else None


class _Merged(Mapping[str, Iterable[Any]]):
    """Several informers' stores as one (their namespaces do not overlap)."""

    def __init__(self, stores: Iterable[_Store]) -> None:
        self.stores = list(stores)

    def __getitem__(self, key: str) -> Iterable[Any]:
        for store in self.stores:
            if key in store.by_ns:
                return store[key]
        raise KeyError(key)

    def __iter__(self) -> Any:
        return (ns for store in self.stores for ns in store.by_ns)

    def __len__(self) -> int:
        return sum(len(store.by_ns) for store in self.stores)


class Informers:
    """The operator's informers. Jobs and bare Pods, for the watched view: one per resource
    and watched namespace (``namespaces``; empty: one cluster-wide each); ``on_held`` runs
    whenever a held workload appears or changes, to wake the planning loops. HeatPolicies and
    Namespaces, for the admission webhook: every replica answers it, and a standby's Kopf
    watches are paused by peering, while these run in every replica."""

    def __init__(
        self,
        api: WatchApi,
        namespaces: Iterable[str],
        heard: view.Heard,
        *,
        on_held: Callable[[], None] | None = None,
    ) -> None:
        scopes: list[str | None] = [*namespaces] or [None]

        def changed(record: workloads.Workload) -> None:
            if record.held and on_held is not None:
                on_held()

        def informers(
            group: str,
            plural: str,
            record: Callable[[Mapping[str, Any]], workloads.Workload | None],
        ) -> list[Informer[workloads.Workload]]:
            return [
                Informer(
                    api,
                    client.path_for(group, "v1", plural, namespace=ns),
                    plural,
                    record,
                    heard,
                    on_change=changed,
                )
                for ns in scopes
            ]

        self.jobs = informers("batch", "jobs", view.job_record)
        self.pods = informers("", "pods", view.pod_record)
        self.jobs_store: Mapping[str, Iterable[Any]] = _Merged(i.store for i in self.jobs)
        self.pods_store: Mapping[str, Iterable[Any]] = _Merged(i.store for i in self.pods)
        self.policies: Informer[resources.HeatPolicy] = Informer(
            api,
            client.path_for(resources.API_GROUP, resources.API_VERSION, "heatpolicies"),
            "heatpolicies",
            _policy_record,
            heard,
        )
        self.namespaces: Informer[dict[str, str]] = Informer(
            api,
            client.path_for("", "v1", "namespaces"),
            "namespaces",
            view.namespace_record,
            heard,
            key=_name,
        )
        self._tasks: list[asyncio.Task[None]] = []

    @property
    def informers(self) -> list[Informer[Any]]:
        return [*self.jobs, *self.pods, self.policies, self.namespaces]

    def admission_inputs(self, namespace: str) -> tuple[list[resources.HeatPolicy], dict[str, str]]:
        """The HeatPolicies and ``namespace``'s labels, as the webhook decides on them;
        :class:`NotSynced` before both have been listed once."""
        if not (self.policies.synced.is_set() and self.namespaces.synced.is_set()):
            raise NotSynced("the HeatPolicies and Namespaces are not listed yet")
        policies = [p for records in self.policies.store.values() for p in records]
        labels = next(iter(self.namespaces.store.get(namespace, ())), None)
        return policies, selection.namespace_labels(namespace, labels)

    def start(self) -> None:
        self._tasks = [
            asyncio.create_task(i.run(), name=f"informer {i.path}") for i in self.informers
        ]

    def not_listed(self) -> str | None:
        """What has not been listed once yet, in words (None: everything has): the replica's
        readiness (kube.probes)."""
        waiting = sorted({i.kind for i in self.informers if not i.synced.is_set()})
        return f"still listing {', '.join(waiting)}" if waiting else None

    async def wait_synced(self) -> None:
        await asyncio.gather(*(i.synced.wait() for i in self.informers))

    async def stop(self) -> None:
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        self._tasks = []
