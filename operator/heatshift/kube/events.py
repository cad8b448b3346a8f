"""Kubernetes Events: what heatshift did or refused, in words, on the object concerned.

:func:`event_body` is pure (an Event dict for an object, a reason and a message);
:class:`Recorder` posts them and remembers the warnings it already posted, so a malformed
hint is reported once per workload rather than on every planning cycle. Posting is best
effort: an Event that cannot be written is logged, never allowed to undo a release.

Called by :mod:`heatshift.kube.apply` and :mod:`heatshift.kube.cycle`.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Mapping
from typing import Any

from heatshift.kube import client, workloads

log = logging.getLogger(__name__)

COMPONENT = "heatshift"
EVENTS_NAMESPACE = "default"
"""Where Events about cluster-scoped objects (LeafSites, HeatPolicies) go."""
MAX_MESSAGE = 1024
MAX_REMEMBERED = 10_000
"""Warnings remembered as posted; beyond it the oldest may be posted again."""


def event_body(
    involved: Mapping[str, Any],
    *,
    reason: str,
    message: str,
    now_s: float,
    warning: bool = False,
) -> dict[str, Any]:
    """A core/v1 Event about ``involved`` (an object with apiVersion, kind and metadata)."""
    meta = involved.get("metadata") or {}
    name = str(meta.get("name") or "object")
    namespace = str(meta.get("namespace") or EVENTS_NAMESPACE)
    stamp = workloads.format_time(now_s)
    return {
        "apiVersion": "v1",
        "kind": "Event",
        "metadata": {
            # Unique per post: Events are records, never updated in place.
            "name": f"{name[:200]}.{uuid.uuid4().hex[:12]}",
            "namespace": namespace,
        },
        "involvedObject": {
            "apiVersion": str(involved.get("apiVersion") or ""),
            "kind": str(involved.get("kind") or ""),
            "name": name,
            "namespace": str(meta.get("namespace") or ""),
            "uid": str(meta.get("uid") or ""),
        },
        "reason": reason,
        "message": message[:MAX_MESSAGE],
        "type": "Warning" if warning else "Normal",
        "source": {"component": COMPONENT},
        "reportingComponent": COMPONENT,
        "firstTimestamp": stamp,
        "lastTimestamp": stamp,
        "count": 1,
    }


class Recorder:
    """Posts Events; each distinct warning is posted once per object for the process's life."""

    def __init__(self, api: client.KubeApi) -> None:
        self._api = api
        # Insertion-ordered, so the oldest entries go first when it is full.
        self._warned: dict[tuple[str, str, str], None] = {}

    async def post(
        self,
        involved: Mapping[str, Any],
        *,
        reason: str,
        message: str,
        now_s: float,
        warning: bool = False,
    ) -> None:
        body = event_body(involved, reason=reason, message=message, now_s=now_s, warning=warning)
        if warning:
            key = (body["involvedObject"]["uid"] or body["involvedObject"]["name"], reason, message)
            if key in self._warned:
                return
            self._warned[key] = None
            if len(self._warned) > MAX_REMEMBERED:
                del self._warned[next(iter(self._warned))]
        path = client.path_for("", "v1", "events", namespace=body["metadata"]["namespace"])
        try:
            await self._api.create(path, body)
        except client.KubeAPIError as err:
            log.warning("event not posted: reason=%s object=%s: %s", reason, body["metadata"], err)
