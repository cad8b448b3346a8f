"""Which HeatPolicy manages a workload. Pure.

A policy selects a workload when its ``namespaceSelector`` matches the workload's namespace
labels and its ``selector`` matches the workload's labels; bare Pods only when the policy sets
``holdBarePods``. When several policies select one workload, the first by name manages it, so
every replica and every cycle agree without coordination.

Called by the admission webhook (to hold new workloads) and the planning cycle (to pick a
policy's workloads).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from heatshift import resources

NAMESPACE_NAME_LABEL = "kubernetes.io/metadata.name"
"""Set by the API server on every namespace; lets a selector name namespaces."""


def namespace_labels(namespace: str, labels: Mapping[str, str] | None) -> dict[str, str]:
    """A namespace's labels, with the name label even when the namespace could not be read."""
    return {NAMESPACE_NAME_LABEL: namespace, **(labels or {})}


def selects(
    spec: resources.HeatPolicySpec,
    *,
    labels: Mapping[str, str],
    ns_labels: Mapping[str, str],
    is_pod: bool,
) -> bool:
    """True when the policy selects a workload with these labels in this namespace."""
    if is_pod and not spec.hold_bare_pods:
        return False
    return spec.namespace_selector.matches(ns_labels) and spec.selector.matches(labels)


def managing_policy(
    policies: Sequence[resources.HeatPolicy],
    *,
    labels: Mapping[str, str],
    ns_labels: Mapping[str, str],
    is_pod: bool,
) -> resources.HeatPolicy | None:
    """The policy that manages the workload: the first by name that selects it, or None."""
    for policy in sorted(policies, key=lambda p: p.metadata.name):
        if selects(policy.spec, labels=labels, ns_labels=ns_labels, is_pod=is_pod):
            return policy
    return None
