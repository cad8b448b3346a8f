"""Builders of Kubernetes objects and a fake API for the operator's tests.

Fluent enough to read in a test, plain dicts underneath (what the API server sends). Used by
``tests/test_kube_*.py`` and ``tests/test_operator_*.py``.
"""

from __future__ import annotations

import asyncio
import copy
import dataclasses
import socket
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from heatshift import resources
from heatshift.kube import client

NOW = 1_700_000_000.0
"""The tests' Unix clock: 2023-11-14T22:13:20Z."""
NOW_TEXT = "2023-11-14T22:13:20Z"
SITE_LABEL = "heatshift.dev/leafsite"


def free_port() -> int:
    """A loopback port nothing listens on (for a server a test starts)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def job(
    name: str = "train",
    namespace: str = "batch",
    *,
    suspend: bool | None = True,
    cpu: str = "4",
    memory: str = "8Gi",
    gpu: int = 0,
    labels: Mapping[str, str] | None = None,
    annotations: Mapping[str, str] | None = None,
    created: str = NOW_TEXT,
    parallelism: int | None = None,
    finished: str | None = None,
    resource_version: str = "1",
) -> dict[str, Any]:
    requests: dict[str, Any] = {"cpu": cpu, "memory": memory}
    if gpu:
        requests["nvidia.com/gpu"] = str(gpu)
    spec: dict[str, Any] = {
        "template": {
            "spec": {
                "restartPolicy": "Never",
                "containers": [
                    {"name": "main", "image": "busybox", "resources": {"requests": requests}}
                ],
            }
        }
    }
    if suspend is not None:
        spec["suspend"] = suspend
    if parallelism is not None:
        spec["parallelism"] = parallelism
    body: dict[str, Any] = {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": {
            "name": name,
            "namespace": namespace,
            "uid": f"uid-{namespace}-{name}",
            "resourceVersion": resource_version,
            "creationTimestamp": created,
            "labels": dict(labels or {}),
            "annotations": dict(annotations or {}),
        },
        "spec": spec,
    }
    if finished is not None:
        body["status"] = {"conditions": [{"type": finished, "status": "True"}]}
    return body


def pod(
    name: str = "solo",
    namespace: str = "batch",
    *,
    gated: bool = True,
    cpu: str = "2",
    labels: Mapping[str, str] | None = None,
    annotations: Mapping[str, str] | None = None,
    owned: bool = False,
    phase: str | None = None,
) -> dict[str, Any]:
    spec: dict[str, Any] = {
        "containers": [
            {"name": "main", "image": "busybox", "resources": {"requests": {"cpu": cpu}}}
        ]
    }
    if gated:
        spec["schedulingGates"] = [{"name": "heatshift.dev/placement"}]
    meta: dict[str, Any] = {
        "name": name,
        "namespace": namespace,
        "uid": f"uid-pod-{name}",
        "resourceVersion": "1",
        "creationTimestamp": NOW_TEXT,
        "labels": dict(labels or {}),
        "annotations": dict(annotations or {}),
    }
    if owned:
        meta["ownerReferences"] = [{"kind": "ReplicaSet", "name": "rs", "uid": "x"}]
    body: dict[str, Any] = {"apiVersion": "v1", "kind": "Pod", "metadata": meta, "spec": spec}
    if phase is not None:
        body["status"] = {"phase": phase}
    return body


def node(
    name: str, site: str, *, cpu: str = "16", memory: str = "64Gi", ready: bool = True
) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Node",
        "metadata": {
            "name": name,
            "labels": {SITE_LABEL: site},
            "resourceVersion": "1",
            "uid": f"uid-node-{name}",
        },
        "status": {
            "allocatable": {"cpu": cpu, "memory": memory},
            "conditions": [{"type": "Ready", "status": "True" if ready else "False"}],
        },
    }


def namespace(name: str, labels: Mapping[str, str] | None = None) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Namespace",
        "metadata": {
            "name": name,
            "resourceVersion": "1",
            "uid": f"uid-ns-{name}",
            "labels": {"kubernetes.io/metadata.name": name, **(labels or {})},
        },
    }


def leafsite(
    name: str,
    *,
    url: str = "http://metering.invalid",
    site_id: str | None = None,
    max_thermal_kw: float = 50.0,
    tank_kwh: float = 80.0,
) -> dict[str, Any]:
    return {
        "apiVersion": resources.GROUP_VERSION,
        "kind": "LeafSite",
        "metadata": {"name": name, "generation": 1, "resourceVersion": "1", "uid": f"uid-{name}"},
        "spec": {
            "nodeSelector": {SITE_LABEL: name},
            "power": {"idleWatts": 200, "wattsPerCPU": 10},
            "heatRecoveryEfficiency": 0.85,
            "tank": {"capacityKWh": tank_kwh, "lossPerHour": 0.0},
            "offtaker": {"kind": "residential", "maxThermalKW": max_thermal_kw},
            "metering": {"http": {"url": url, "siteId": site_id or name, "timeoutSeconds": 1}},
            "stalenessLimit": "10m",
        },
    }


def heatpolicy(
    name: str = "batch",
    *,
    namespace_labels: Mapping[str, str] | None = None,
    match_labels: Mapping[str, str] | None = None,
    sites: Sequence[str] = (),
    max_delay: str = "6h",
    replan: str = "5m",
    solver_limit: str = "2s",
    hold_bare_pods: bool = False,
) -> dict[str, Any]:
    return {
        "apiVersion": resources.GROUP_VERSION,
        "kind": "HeatPolicy",
        "metadata": {"name": name, "generation": 1, "resourceVersion": "1", "uid": f"uid-{name}"},
        "spec": {
            "namespaceSelector": {"matchLabels": dict(namespace_labels or {})},
            "selector": {"matchLabels": dict(match_labels or {})},
            "sites": list(sites),
            "slaClasses": [
                {"name": "standard", "maxDelay": max_delay, "priority": 1},
                {"name": "urgent", "maxDelay": "15m", "priority": 5},
            ],
            "defaultSLAClass": "standard",
            "planning": {
                "horizon": "6h",
                "step": "15m",
                "replanInterval": replan,
                "solverTimeLimit": solver_limit,
            },
            "holdBarePods": hold_bare_pods,
        },
    }


def parsed_policy(body: Mapping[str, Any]) -> resources.HeatPolicy:
    parsed = resources.parse_resource(body)
    assert isinstance(parsed, resources.HeatPolicy)
    return parsed


def parsed_site(body: Mapping[str, Any]) -> resources.LeafSite:
    parsed = resources.parse_resource(body)
    assert isinstance(parsed, resources.LeafSite)
    return parsed


def _merge(target: dict[str, Any], patch: Mapping[str, Any]) -> None:
    """RFC 7386 JSON merge patch, as the API server applies it."""
    for key, value in patch.items():
        if value is None:
            target.pop(key, None)
        elif isinstance(value, Mapping) and isinstance(target.get(key), dict):
            _merge(target[key], value)
        else:
            target[key] = copy.deepcopy(value)


@dataclasses.dataclass
class Call:
    verb: str
    path: str
    body: Any = None


Fault = Callable[[str, str], "client.KubeAPIError | None"]
"""Fault injection: given a call's verb and path, the error it meets (None: it goes through)."""


class FakeApi:
    """An in-memory API server for unit tests: objects by path, merge patches with optimistic
    concurrency on ``metadata.resourceVersion``, scripted failures, injected faults (``fault``
    before a call takes effect, ``lost_answer`` after), latency, and logs of calls, of requests
    in flight and of the patches that took effect."""

    def __init__(self, *, latency_s: float = 0.0) -> None:
        self.objects: dict[str, dict[str, Any]] = {}
        self.calls: list[Call] = []
        self.failures: dict[tuple[str, str], list[client.KubeAPIError]] = {}
        self.created: list[dict[str, Any]] = []
        self.latency_s = latency_s
        self.fault: Fault | None = None
        self.lost_answer: Fault | None = None
        """After a call took effect: the error its caller sees instead of the answer."""
        self.timeline: list[tuple[str, str, str]] = []
        """("start" | "end", verb, path) of every call, in the order they happened."""
        self.applied: list[str] = []
        """Paths of the patches that changed an object, in order."""
        self.in_flight = 0
        self.max_in_flight = 0
        self._version = 100

    async def _enter(self, verb: str, path: str, body: Any = None) -> None:
        self.calls.append(Call(verb, path, copy.deepcopy(body)))
        self.timeline.append(("start", verb, path))
        self.in_flight += 1
        self.max_in_flight = max(self.max_in_flight, self.in_flight)
        try:
            await asyncio.sleep(self.latency_s)
        finally:
            self.in_flight -= 1
            self.timeline.append(("end", verb, path))
        self._maybe_fail(verb, path)
        error = self.fault(verb, path) if self.fault is not None else None
        if error is not None:
            raise error

    def _answer(self, verb: str, path: str) -> None:
        error = self.lost_answer(verb, path) if self.lost_answer is not None else None
        if error is not None:
            raise error

    def put(self, path: str, obj: Mapping[str, Any]) -> None:
        self.objects[path] = copy.deepcopy(dict(obj))

    def fail(self, verb: str, path: str, *errors: client.KubeAPIError) -> None:
        """The next calls of ``verb`` on ``path`` raise ``errors``, one each."""
        self.failures.setdefault((verb, path), []).extend(errors)

    def _maybe_fail(self, verb: str, path: str) -> None:
        queued = self.failures.get((verb, path))
        if queued:
            raise queued.pop(0)

    def bump(self, path: str) -> None:
        """Someone else changed the object: a new resourceVersion."""
        self._version += 1
        self.objects[path]["metadata"]["resourceVersion"] = str(self._version)

    async def get(self, path: str) -> dict[str, Any]:
        await self._enter("get", path)
        if path not in self.objects:
            raise client.KubeNotFound(f"GET {path}: HTTP 404", 404)
        return copy.deepcopy(self.objects[path])

    async def list_objects(self, path: str) -> list[dict[str, Any]]:
        await self._enter("list", path)
        prefix = path.rstrip("/") + "/"
        return [
            copy.deepcopy(obj)
            for key, obj in sorted(self.objects.items())
            if key.startswith(prefix) and "/" not in key[len(prefix) :]
        ] + [
            copy.deepcopy(obj)
            for key, obj in sorted(self.objects.items())
            if _cluster_wide_match(path, key)
        ]

    async def patch(
        self,
        path: str,
        body: dict[str, Any] | list[dict[str, Any]],
        content_type: str = client.MERGE_PATCH,
    ) -> dict[str, Any]:
        await self._enter("patch", path, body)
        assert isinstance(body, dict)
        target_path = path.removesuffix("/status")
        if target_path not in self.objects:
            raise client.KubeNotFound(f"PATCH {path}: HTTP 404", 404)
        target = self.objects[target_path]
        wanted = (body.get("metadata") or {}).get("resourceVersion")
        if wanted is not None and wanted != target["metadata"].get("resourceVersion"):
            raise client.KubeConflict(f"PATCH {path}: HTTP 409", 409)
        _merge(target, body)
        self.bump(target_path)
        self.applied.append(path)
        self._answer("patch", path)
        return copy.deepcopy(target)

    async def create(self, path: str, body: dict[str, Any]) -> dict[str, Any]:
        await self._enter("create", path, body)
        self.created.append(copy.deepcopy(body))
        self._answer("create", path)
        return copy.deepcopy(body)

    def patches(self, path: str) -> list[Any]:
        return [c.body for c in self.calls if c.verb == "patch" and c.path == path]

    def events(self, reason: str | None = None) -> list[dict[str, Any]]:
        return [
            e for e in self.created if e.get("kind") == "Event" and reason in (None, e["reason"])
        ]


def _cluster_wide_match(collection: str, key: str) -> bool:
    """``/apis/batch/v1/jobs`` lists every ``/apis/batch/v1/namespaces/*/jobs/*``."""
    head, _, plural = collection.rstrip("/").rpartition("/")
    if "/namespaces/" in collection:
        return False
    parts = key.split("/")
    prefix = head.split("/")
    return (
        len(parts) == len(prefix) + 4
        and parts[: len(prefix)] == prefix
        and parts[len(prefix)] == "namespaces"
        and parts[len(prefix) + 2] == plural
    )


def store(api: FakeApi, *objs: Mapping[str, Any]) -> None:
    """Put objects where the real API server would serve them."""
    for obj in objs:
        meta = obj["metadata"]
        group_version = obj["apiVersion"]
        group, _, version = group_version.rpartition("/")
        plural = {
            "Job": "jobs",
            "Pod": "pods",
            "Node": "nodes",
            "Namespace": "namespaces",
            "LeafSite": "leafsites",
            "HeatPolicy": "heatpolicies",
            "Secret": "secrets",
        }[obj["kind"]]
        path = client.path_for(
            group, version, plural, namespace=meta.get("namespace"), name=meta["name"]
        )
        api.put(path, obj)
