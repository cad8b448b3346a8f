"""The webhook's hold decisions for new Jobs and bare Pods."""

from __future__ import annotations

from typing import Any

import pytest

import kube_fixtures as kf
from heatshift import resources
from heatshift.kube import admission, selection, workloads

ML = selection.namespace_labels("batch", {"team": "ml"})
WEB = selection.namespace_labels("web", {})


def _policies(**kwargs: Any) -> list[resources.HeatPolicy]:
    return [kf.parsed_policy(kf.heatpolicy("batch", namespace_labels={"team": "ml"}, **kwargs))]


def test_a_selected_job_is_suspended() -> None:
    changes, policy = admission.hold_job(kf.job(suspend=None), _policies(), ML)
    assert changes == {"spec": {"suspend": True}}
    assert policy == "batch"


@pytest.mark.parametrize(
    ("body", "ns"),
    [
        (kf.job(suspend=None), WEB),  # namespace not selected
        (kf.job(suspend=None, annotations={workloads.RELEASED_AT: kf.NOW_TEXT}), ML),
    ],
)
def test_other_jobs_pass_untouched(body: dict[str, Any], ns: dict[str, str]) -> None:
    assert admission.hold_job(body, _policies(), ns) == (None, None)


def test_the_label_selector_applies() -> None:
    policies = _policies(match_labels={"heat": "ok"})
    assert admission.hold_job(kf.job(labels={"heat": "ok"}), policies, ML)[1] == "batch"
    assert admission.hold_job(kf.job(labels={"heat": "no"}), policies, ML) == (None, None)


def test_namespaces_are_selected_by_name_without_labels() -> None:
    by_name = [
        kf.parsed_policy(
            kf.heatpolicy("batch", namespace_labels={selection.NAMESPACE_NAME_LABEL: "batch"})
        )
    ]
    labels = selection.namespace_labels("batch", None)
    assert admission.hold_job(kf.job(), by_name, labels)[1] == "batch"


def test_no_policy_no_hold() -> None:
    assert admission.hold_job(kf.job(), [], ML) == (None, None)


def test_a_bare_pod_gets_the_gate_only_when_the_policy_holds_pods() -> None:
    pod = kf.pod(gated=False)
    pod["spec"]["schedulingGates"] = [{"name": "example.com/other"}]

    assert admission.hold_pod(pod, _policies(), ML) == (None, None)
    changes, policy = admission.hold_pod(pod, _policies(hold_bare_pods=True), ML)

    assert policy == "batch"
    assert changes == {
        "spec": {
            "schedulingGates": [
                {"name": "example.com/other"},
                {"name": workloads.PLACEMENT_GATE},
            ]
        }
    }


@pytest.mark.parametrize("body", [kf.pod(gated=False, owned=True), kf.pod(gated=True)])
def test_owned_or_already_gated_pods_pass_untouched(body: dict[str, Any]) -> None:
    assert admission.hold_pod(body, _policies(hold_bare_pods=True), ML) == (None, None)
