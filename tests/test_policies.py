"""The examples in policies/: each is valid against the CRD schema and the pydantic models.

(Their CEL rules are checked in test_crds.py, which holds the CEL evaluator.)
"""

from __future__ import annotations

import pathlib
from typing import Any

import jsonschema
import pytest
import yaml

from heatshift import crdgen, model, resources

ROOT = pathlib.Path(__file__).resolve().parent.parent
POLICIES = ROOT / "policies"
CRDS = ROOT / "crds"

EXPECTED = {
    "swimming-pool.yaml",
    "district-heating.yaml",
    "greenhouse.yaml",
    "gpu-training.yaml",
    "kueue.yaml",
}
OTHER_KINDS = {("v1", "Secret")}
"""Documents besides ours an example may carry (e.g. the metering token's Secret)."""

FILES = sorted(POLICIES.glob("*.yaml"))


def documents(path: pathlib.Path) -> list[dict[str, Any]]:
    return [d for d in yaml.safe_load_all(path.read_text(encoding="utf-8")) if d is not None]


def ours(path: pathlib.Path) -> list[dict[str, Any]]:
    return [d for d in documents(path) if d["apiVersion"] == resources.GROUP_VERSION]


def strict_schema(kind: str) -> dict[str, Any]:
    """The committed CRD's schema, refusing unknown fields as ``kubectl --validate=strict``."""
    (meta,) = [k for k in crdgen.KINDS if k.kind == kind]
    crd = yaml.safe_load((CRDS / crdgen.file_name(meta)).read_text(encoding="utf-8"))
    schema: dict[str, Any] = crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]

    def close(node: dict[str, Any], top: bool) -> dict[str, Any]:
        node = dict(node)
        if "properties" in node:
            node["properties"] = {
                k: v if (top and k == "metadata") else close(v, False)
                for k, v in node["properties"].items()
            }
            node["additionalProperties"] = False
        for key in ("items", "additionalProperties"):
            if isinstance(node.get(key), dict):
                node[key] = close(node[key], False)
        return node

    return close(schema, True)


def test_the_kueue_queues_name_heatshifts_check() -> None:
    docs = documents(POLICIES / "kueue" / "cluster-queue.yaml")
    checks = {d["metadata"]["name"] for d in docs if d["kind"] == "AdmissionCheck"}
    assert all(
        d["spec"]["controllerName"] == "heatshift.dev/heat"
        for d in docs
        if d["kind"] == "AdmissionCheck"
    )
    (queue,) = [d for d in docs if d["kind"] == "ClusterQueue"]
    named = {c["name"] for c in queue["spec"]["admissionChecksStrategy"]["admissionChecks"]}
    assert named == checks == {"heatshift"}
    assert "`kueue.yaml`" in (POLICIES / "README.md").read_text(encoding="utf-8")


def test_the_examples_and_a_readme_exist() -> None:
    assert {p.name for p in FILES} == EXPECTED
    readme = (POLICIES / "README.md").read_text(encoding="utf-8")
    for name in EXPECTED:
        assert f"`{name}`" in readme


@pytest.mark.parametrize("path", FILES, ids=lambda p: p.name)
def test_every_document_is_ours_or_an_allowed_kind(path: pathlib.Path) -> None:
    for doc in documents(path):
        known = doc["apiVersion"] == resources.GROUP_VERSION and doc["kind"] in {
            "LeafSite",
            "HeatPolicy",
        }
        assert known or (doc["apiVersion"], doc["kind"]) in OTHER_KINDS
    assert ours(path)


@pytest.mark.parametrize("path", FILES, ids=lambda p: p.name)
def test_examples_validate_against_the_crd_schema(path: pathlib.Path) -> None:
    for doc in ours(path):
        schema = strict_schema(doc["kind"])
        jsonschema.Draft4Validator(schema).validate(doc)
        jsonschema.Draft4Validator(schema).validate(crdgen.apply_defaults(schema, doc))


@pytest.mark.parametrize("path", FILES, ids=lambda p: p.name)
def test_examples_parse_with_the_models(path: pathlib.Path) -> None:
    for doc in ours(path):
        obj = resources.parse_resource(doc)
        assert obj.to_dict()["spec"] == resources.parse_resource(obj.to_dict()).to_dict()["spec"]
        if isinstance(obj, resources.LeafSite):
            site = obj.to_site(model.Resources(cpu=128, memory_gib=512, gpu=8))
            assert site.name == obj.metadata.name
        else:
            cfg = obj.spec.planner_config()
            assert cfg.horizon_s > cfg.step_s


def test_secret_refs_point_at_secrets_in_the_same_file() -> None:
    for path in FILES:
        secrets = {
            (d["metadata"]["namespace"], d["metadata"]["name"])
            for d in documents(path)
            if d["kind"] == "Secret"
        }
        for doc in ours(path):
            obj = resources.parse_resource(doc)
            if isinstance(obj, resources.LeafSite) and obj.spec.metering.http:
                ref = obj.spec.metering.http.token_secret_ref
                if ref is not None:
                    assert (ref.namespace, ref.name) in secrets


def test_the_examples_show_what_they_promise() -> None:
    def parsed(name: str) -> list[resources.Resource]:
        return [resources.parse_resource(d) for d in ours(POLICIES / name)]

    (pool,) = parsed("swimming-pool.yaml")
    assert isinstance(pool, resources.LeafSite)
    assert pool.spec.offtaker.kind is model.OfftakerKind.POOL
    assert pool.spec.metering.http is not None and pool.spec.metering.http.token_secret_ref

    loop, batch = parsed("district-heating.yaml")
    assert isinstance(loop, resources.LeafSite) and isinstance(batch, resources.HeatPolicy)
    assert loop.spec.offtaker.kind is model.OfftakerKind.DISTRICT_HEATING
    assert loop.spec.metering.prometheus is not None
    assert batch.spec.sites == (loop.metadata.name,)

    greenhouse, _ = parsed("greenhouse.yaml")
    assert isinstance(greenhouse, resources.LeafSite)
    assert greenhouse.spec.offtaker.kind is model.OfftakerKind.GREENHOUSE

    (training,) = parsed("gpu-training.yaml")
    assert isinstance(training, resources.HeatPolicy)
    delays = [c.max_delay_s for c in training.spec.sla_classes]
    assert len(delays) >= 2 and len(set(delays)) == len(delays)
    assert training.spec.planner_config().horizon_s >= max(delays)
