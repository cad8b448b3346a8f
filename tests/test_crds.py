"""The generated CRDs: up to date, structural, well described, and their CEL rules enforced.

The CEL rules are evaluated for real with cel-python (``celpy``), including Kubernetes'
``duration()``: objects go through the API server's pipeline as far as it can be imitated
without one (unknown fields refused as with ``kubectl --validate=strict``, defaults applied,
OpenAPI schema, then the CEL rules of every node) and the verdict is compared with what the
pydantic models in ``heatshift.resources`` say of the same object.
"""

from __future__ import annotations

import copy
import functools
import pathlib
import re
from collections.abc import Iterator
from typing import Any

import celpy
import celpy.adapter
import jsonschema
import pydantic
import pytest
import yaml
from celpy import celtypes
from hypothesis import given, settings
from hypothesis import strategies as st

from heatshift import crdgen, durations, resources

ROOT = pathlib.Path(__file__).resolve().parent.parent
CRDS = ROOT / "crds"
POLICIES = ROOT / "policies"

JSON = dict[str, Any]


@functools.cache
def committed(kind: crdgen.Kind) -> JSON:
    crd: JSON = yaml.safe_load((CRDS / crdgen.file_name(kind)).read_text(encoding="utf-8"))
    return crd


def root_schema(kind: crdgen.Kind) -> JSON:
    schema: JSON = committed(kind)["spec"]["versions"][0]["schema"]["openAPIV3Schema"]
    return schema


KIND_BY_NAME = {k.kind: k for k in crdgen.KINDS}


# --- an imitation of the API server's admission of a custom resource ---------------------------


def strict(schema: JSON) -> JSON:
    """``schema`` refusing unknown fields (what ``kubectl apply`` does with strict validation)."""
    out = {k: v for k, v in schema.items() if k not in ("properties", "items")}
    if "properties" in schema:
        out["properties"] = {
            name: prop if name == "metadata" else strict(prop)
            for name, prop in schema["properties"].items()
        }
        out["additionalProperties"] = False
    if isinstance(schema.get("items"), dict):
        out["items"] = strict(schema["items"])
    if isinstance(schema.get("additionalProperties"), dict):
        out["additionalProperties"] = strict(schema["additionalProperties"])
    return out


def to_cel(schema: JSON, value: Any) -> Any:
    """``value`` as a CEL value typed by the schema, as Kubernetes does (number -> double)."""
    kind = schema.get("type")
    if kind == "object" and isinstance(value, dict):
        if "properties" in schema:
            props = schema["properties"]
            return celtypes.MapType(
                {celtypes.StringType(k): to_cel(props[k], v) for k, v in value.items()}
            )
        extra = schema.get("additionalProperties")
        if isinstance(extra, dict):
            return celtypes.MapType(
                {celtypes.StringType(k): to_cel(extra, v) for k, v in value.items()}
            )
        return celpy.adapter.json_to_cel(value)
    if kind == "array":
        return celtypes.ListType([to_cel(schema["items"], v) for v in value])
    if kind == "number":
        return celtypes.DoubleType(float(value))
    if kind == "integer":
        return celtypes.IntType(value)
    if kind == "boolean":
        return celtypes.BoolType(value)
    return celtypes.StringType(value)


_ENV = celpy.Environment()
_PROGRAMS: dict[str, celpy.Runner] = {}


def cel_program(rule: str) -> celpy.Runner:
    if rule not in _PROGRAMS:
        _PROGRAMS[rule] = _ENV.program(_ENV.compile(rule))
    return _PROGRAMS[rule]


def cel_errors(schema: JSON, value: Any, path: str = "") -> list[str]:
    """The messages of every CEL rule, anywhere in ``value``, that does not hold."""
    errors = []
    for rule in schema.get("x-kubernetes-validations", []):
        result = cel_program(rule["rule"]).evaluate({"self": to_cel(schema, value)})
        assert isinstance(result, celtypes.BoolType), (rule, result)
        if not result:
            errors.append(f"{path or '<root>'}: {rule['message']}")
    if isinstance(value, dict):
        for name, prop in schema.get("properties", {}).items():
            if name in value:
                errors += cel_errors(prop, value[name], f"{path}.{name}")
        extra = schema.get("additionalProperties")
        if isinstance(extra, dict):
            for name, item in value.items():
                errors += cel_errors(extra, item, f"{path}.{name}")
    elif isinstance(value, list) and isinstance(schema.get("items"), dict):
        for i, item in enumerate(value):
            errors += cel_errors(schema["items"], item, f"{path}[{i}]")
    return errors


@functools.cache
def strict_validator(kind: crdgen.Kind) -> jsonschema.Draft4Validator:
    return jsonschema.Draft4Validator(strict(root_schema(kind)))


def schema_errors(kind: crdgen.Kind, value: Any) -> list[str]:
    validator = strict_validator(kind)
    return [
        f"{'.'.join(map(str, e.absolute_path))}: {e.message}" for e in validator.iter_errors(value)
    ]


def admit(document: JSON) -> tuple[list[str], list[str]]:
    """(schema errors, CEL errors) the API server would give ``document``.

    Like the server, CEL rules only run on an object that passed the schema, after defaulting.
    """
    kind = KIND_BY_NAME[document["kind"]]
    schema = root_schema(kind)
    structural = schema_errors(kind, document)
    if structural:
        return structural, []
    defaulted = crdgen.apply_defaults(schema, document)
    structural = schema_errors(kind, defaulted)
    return structural, [] if structural else cel_errors(schema, defaulted)


def pydantic_error(document: JSON) -> str | None:
    try:
        resources.parse_resource(document)
    except resources.ResourceError as err:
        assert isinstance(err.__cause__, pydantic.ValidationError)
        return str(err)
    return None


# --- generated == committed --------------------------------------------------------------------


@pytest.mark.parametrize("kind", crdgen.KINDS, ids=lambda k: k.kind)
def test_committed_crd_is_the_generator_output(kind: crdgen.Kind) -> None:
    path = CRDS / crdgen.file_name(kind)
    assert path.read_text(encoding="utf-8") == crdgen.render(kind), (
        f"{path} is stale: run `python -m heatshift.crdgen crds/`"
    )


def test_check_mode_passes_on_the_repo_and_fails_on_a_stale_copy(tmp_path: pathlib.Path) -> None:
    assert crdgen.main(["--check", str(CRDS)]) == 0
    assert crdgen.main([str(tmp_path)]) == 0
    for kind in crdgen.KINDS:
        written = (tmp_path / crdgen.file_name(kind)).read_text(encoding="utf-8")
        assert written == (CRDS / crdgen.file_name(kind)).read_text(encoding="utf-8")
    stale = tmp_path / crdgen.file_name(crdgen.LEAF_SITE)
    stale.write_text(stale.read_text(encoding="utf-8").replace("lsite", "ls"), encoding="utf-8")
    assert crdgen.stale(tmp_path) == [stale]
    assert crdgen.main(["--check", str(tmp_path)]) == 1


@pytest.mark.parametrize("kind", crdgen.KINDS, ids=lambda k: k.kind)
def test_spec_and_status_schemas_are_the_models(kind: crdgen.Kind) -> None:
    props = root_schema(kind)["properties"]
    assert props["spec"] == crdgen.openapi_schema(kind.spec)
    assert props["status"] == crdgen.openapi_schema(kind.status)


# --- structural schema -------------------------------------------------------------------------

FORBIDDEN_KEYS = {
    "$ref",
    "$defs",
    "definitions",
    "anyOf",
    "oneOf",
    "allOf",
    "not",
    "title",
    "const",
    "nullable",
    "x-kubernetes-preserve-unknown-fields",
    "x-kubernetes-int-or-string",
    "x-kubernetes-embedded-resource",
}


def nodes(schema: JSON, path: str = "") -> Iterator[tuple[str, JSON]]:
    yield path, schema
    for name, prop in schema.get("properties", {}).items():
        yield from nodes(prop, f"{path}.{name}")
    if isinstance(schema.get("items"), dict):
        yield from nodes(schema["items"], f"{path}[]")
    if isinstance(schema.get("additionalProperties"), dict):
        yield from nodes(schema["additionalProperties"], f"{path}{{}}")


ALL_NODES = [
    pytest.param(node, id=f"{kind.kind}{path}")
    for kind in crdgen.KINDS
    for path, node in nodes(root_schema(kind))
]


@pytest.mark.parametrize("node", ALL_NODES)
def test_every_node_is_structural(node: JSON) -> None:
    assert node.get("type") in {"object", "array", "string", "number", "integer", "boolean"}
    assert not FORBIDDEN_KEYS & node.keys()
    assert not ("properties" in node and "additionalProperties" in node)
    assert node.get("additionalProperties", {}) is not False
    if node["type"] == "array":
        assert isinstance(node["items"], dict)
    for name in node.get("required", []):
        assert name in node["properties"]
    if "pattern" in node:
        re.compile(node["pattern"])
    if "default" in node:
        jsonschema.Draft4Validator(node).validate(node["default"])
    for key in node.get("x-kubernetes-list-map-keys", []):
        assert key in node["items"]["required"]


@pytest.mark.parametrize("node", ALL_NODES)
def test_every_field_has_a_description_and_a_camel_case_name(node: JSON) -> None:
    for name, prop in node.get("properties", {}).items():
        assert re.fullmatch(r"[a-z][A-Za-z0-9]*", name), name
        if name != "metadata":
            assert prop.get("description", "").strip(), name
    items = node.get("items")
    if isinstance(items, dict) and items["type"] == "object":
        assert items.get("description", "").strip()


@pytest.mark.parametrize("kind", crdgen.KINDS, ids=lambda k: k.kind)
def test_names_scope_and_subresources(kind: crdgen.Kind) -> None:
    crd = committed(kind)
    assert crd["metadata"]["name"] == f"{kind.plural}.heatshift.dev"
    spec = crd["spec"]
    assert spec["group"] == "heatshift.dev"
    assert spec["scope"] == "Cluster"
    assert spec["names"]["categories"] == ["heatshift"]
    (version,) = spec["versions"]
    assert version["name"] == "v1alpha1"
    assert version["served"] and version["storage"]
    assert version["subresources"] == {"status": {}}
    assert root_schema(kind)["required"] == ["spec"]


def test_short_names_avoid_common_words() -> None:
    assert committed(crdgen.LEAF_SITE)["spec"]["names"]["shortNames"] == ["lsite"]
    assert committed(crdgen.HEAT_POLICY)["spec"]["names"]["shortNames"] == ["hpol"]


COLUMN_TYPES = {
    "integer": {"type": "integer"},
    "number": {"type": "number"},
    "boolean": {"type": "boolean"},
    "string": {"type": "string"},
    "date": {"type": "string", "format": "date-time"},
}


def resolve(schema: JSON, json_path: str) -> JSON:
    node = schema
    for part in json_path.lstrip(".").split("."):
        node = node["properties"][part]
    return node


@pytest.mark.parametrize("kind", crdgen.KINDS, ids=lambda k: k.kind)
def test_printer_columns_point_at_fields_of_their_type(kind: crdgen.Kind) -> None:
    (version,) = committed(kind)["spec"]["versions"]
    columns = version["additionalPrinterColumns"]
    assert columns[-1]["jsonPath"] == ".metadata.creationTimestamp"
    for column in columns[:-1]:
        assert column["jsonPath"].startswith((".status.", ".spec."))
        field = resolve(root_schema(kind), column["jsonPath"])
        for key, value in COLUMN_TYPES[column["type"]].items():
            assert field.get(key) == value, column
        assert column["description"]


def test_printer_columns_are_the_asked_for_ones() -> None:
    def shown(kind: crdgen.Kind) -> list[str]:
        (version,) = committed(kind)["spec"]["versions"]
        return [c["name"] for c in version["additionalPrinterColumns"] if not c.get("priority")]

    assert shown(crdgen.LEAF_SITE) == [
        "Demand-kW",
        "Tank-%",
        "IT-load-kW",
        "Metering-age",
        "Heat-aware",
        "Age",
    ]
    assert shown(crdgen.HEAT_POLICY) == [
        "Held",
        "Released",
        "Expected-useful-kWh",
        "Solver",
        "Age",
    ]


def test_a_union_of_two_types_is_refused() -> None:
    class Ambiguous(resources.Schema):
        value: int | str = pydantic.Field(description="either")

    with pytest.raises(crdgen.CRDGenError, match="union"):
        crdgen.openapi_schema(Ambiguous)


def test_apply_defaults_fills_missing_fields_recursively_and_copies() -> None:
    schema = root_schema(crdgen.HEAT_POLICY)
    doc = {
        "spec": {"planning": {"horizon": "48h"}, "slaClasses": [{"name": "a", "maxDelay": "1h"}]}
    }
    out = crdgen.apply_defaults(schema, doc)
    assert out["spec"]["planning"] == {
        "horizon": "48h",
        "step": "15m",
        "replanInterval": "5m",
        "solverTimeLimit": "2s",
    }
    assert out["spec"]["slaClasses"] == [{"name": "a", "maxDelay": "1h", "priority": 1}]
    assert out["spec"]["objective"]["usefulHeatWeight"] == 1000.0
    assert "planning" in out["spec"] and doc["spec"]["planning"] == {"horizon": "48h"}


# --- CEL rules, against good and bad objects ---------------------------------------------------

LEAF_SITE: JSON = {
    "apiVersion": "heatshift.dev/v1alpha1",
    "kind": "LeafSite",
    "metadata": {"name": "pool"},
    "spec": {
        "nodeSelector": {"heatshift.dev/site": "pool"},
        "power": {"idleWatts": 500, "wattsPerGPU": 300},
        "tank": {"capacityKWh": 50},
        "offtaker": {"kind": "pool", "maxThermalKW": 40},
        "metering": {"http": {"url": "https://meter.example/v1", "siteId": "pool-1"}},
    },
}

HEAT_POLICY: JSON = {
    "apiVersion": "heatshift.dev/v1alpha1",
    "kind": "HeatPolicy",
    "metadata": {"name": "batch"},
    "spec": {
        "namespaceSelector": {"matchLabels": {"heatshift.dev/managed": "true"}},
        "selector": {},
    },
}

DELETE = object()


def edit(base: JSON, **changes: Any) -> JSON:
    """A copy of ``base`` with ``changes`` applied; keys are dotted paths below ``spec``."""
    doc = copy.deepcopy(base)
    for dotted, value in changes.items():
        node = doc["spec"]
        *parents, leaf = dotted.split("__")
        for part in parents:
            node = node.setdefault(part, {})
        if value is DELETE:
            del node[leaf]
        else:
            node[leaf] = value
    return doc


PROM = {"url": "http://prom:9090", "queries": {"demandKW": "d", "tankEnergyKWh": "e"}}
HTTP_PLAIN = {"url": "http://meter:8080", "siteId": "s", "insecureSkipTLSVerify": True}

MSG_METERING = "exactly one metering source (http or prometheus) must be set"
MSG_DEFAULT_CLASS = "defaultSLAClass must name one of slaClasses"
MSG_VALUES = "values must be non-empty for In and NotIn, and empty for Exists and DoesNotExist"

# (id, document, CEL message expected or None for a valid object)
CEL_CASES: list[tuple[str, JSON, str | None]] = [
    ("leafsite-minimal", LEAF_SITE, None),
    ("prometheus-only", edit(LEAF_SITE, metering={"prometheus": PROM}), None),
    ("both-sources", edit(LEAF_SITE, metering__prometheus=PROM), MSG_METERING),
    ("no-source", edit(LEAF_SITE, metering={}), MSG_METERING),
    (
        "skip-tls-on-http",
        edit(LEAF_SITE, metering={"http": HTTP_PLAIN}),
        "insecureSkipTLSVerify applies to https:// URLs only",
    ),
    ("skip-tls-on-https", edit(LEAF_SITE, metering__http__insecureSkipTLSVerify=True), None),
    (
        "no-job-power",
        edit(LEAF_SITE, power={"idleWatts": 500}),
        "at least one of wattsPerGPU and wattsPerCPU must be positive",
    ),
    ("cpu-power-only", edit(LEAF_SITE, power={"wattsPerCPU": 9}), None),
    (
        "empty-capacity-override",
        edit(LEAF_SITE, capacity={}),
        "a capacity override must set at least one of cpu, memoryGiB and gpu",
    ),
    ("gpu-capacity-override", edit(LEAF_SITE, capacity={"gpu": 8}), None),
    ("zero-staleness", edit(LEAF_SITE, stalenessLimit="0s"), "stalenessLimit must be positive"),
    ("staleness-1m30s", edit(LEAF_SITE, stalenessLimit="1m30s"), None),
    ("policy-minimal", HEAT_POLICY, None),
    (
        "unknown-default-class",
        edit(HEAT_POLICY, defaultSLAClass="gold"),
        MSG_DEFAULT_CLASS,
    ),
    (
        "classes-without-the-default-standard",
        edit(HEAT_POLICY, slaClasses=[{"name": "gold", "maxDelay": "1h"}]),
        MSG_DEFAULT_CLASS,
    ),
    (
        "classes-with-matching-default",
        edit(HEAT_POLICY, slaClasses=[{"name": "gold", "maxDelay": "1h"}], defaultSLAClass="gold"),
        None,
    ),
    (
        "duplicate-class-names",
        edit(
            HEAT_POLICY,
            slaClasses=[
                {"name": "standard", "maxDelay": "1h"},
                {"name": "standard", "maxDelay": "2h"},
            ],
        ),
        "SLA class names must be unique",
    ),
    (
        "in-without-values",
        edit(HEAT_POLICY, selector={"matchExpressions": [{"key": "a", "operator": "In"}]}),
        MSG_VALUES,
    ),
    (
        "notin-empty-values",
        edit(
            HEAT_POLICY,
            namespaceSelector={
                "matchExpressions": [{"key": "a", "operator": "NotIn", "values": []}]
            },
        ),
        MSG_VALUES,
    ),
    (
        "exists-with-values",
        edit(
            HEAT_POLICY,
            selector={"matchExpressions": [{"key": "a", "operator": "Exists", "values": ["x"]}]},
        ),
        MSG_VALUES,
    ),
    (
        "good-expressions",
        edit(
            HEAT_POLICY,
            selector={
                "matchExpressions": [
                    {"key": "a", "operator": "In", "values": ["x", "y"]},
                    {"key": "b", "operator": "DoesNotExist"},
                ]
            },
        ),
        None,
    ),
    (
        "horizon-equals-step",
        edit(HEAT_POLICY, planning={"horizon": "1h30m", "step": "90m"}),
        "horizon must be longer than step",
    ),
    ("zero-step", edit(HEAT_POLICY, planning={"step": "0s"}), "step must be positive"),
    (
        "replan-beyond-horizon",
        edit(HEAT_POLICY, planning={"horizon": "2h", "step": "15m", "replanInterval": "3h"}),
        "replanInterval must not be longer than horizon",
    ),
    (
        "zero-solver-time",
        edit(HEAT_POLICY, planning={"solverTimeLimit": "0ms"}),
        "solverTimeLimit must be positive",
    ),
    (
        "solver-time-equals-replan",
        edit(HEAT_POLICY, planning={"solverTimeLimit": "5m", "replanInterval": "300s"}),
        "solverTimeLimit must be shorter than replanInterval",
    ),
    (
        "subsecond-solver-time",
        edit(HEAT_POLICY, planning={"solverTimeLimit": "500ms", "replanInterval": "1m"}),
        None,
    ),
    (
        "all-weights-zero",
        edit(
            HEAT_POLICY,
            objective={"usefulHeatWeight": 0, "dumpedHeatWeight": 0, "delayWeight": 0},
        ),
        "at least one objective weight must be positive",
    ),
    (
        "delay-weight-only",
        edit(HEAT_POLICY, objective={"usefulHeatWeight": 0, "dumpedHeatWeight": 0}),
        None,
    ),
]


@pytest.mark.parametrize(
    ("document", "message"), [c[1:] for c in CEL_CASES], ids=[c[0] for c in CEL_CASES]
)
def test_cel_rules_and_pydantic_agree(document: JSON, message: str | None) -> None:
    structural, cel = admit(document)
    assert structural == []
    assert [m.split(": ", 1)[1] for m in cel] == ([message] if message else [])
    error = pydantic_error(document)
    if message is None:
        assert error is None
    else:
        assert error is not None and message in error


def test_every_cel_rule_has_a_case_that_breaks_it() -> None:
    messages = {
        rule["message"]
        for kind in crdgen.KINDS
        for _, node in nodes(root_schema(kind))
        for rule in node.get("x-kubernetes-validations", [])
    }
    broken = {message for _, _, message in CEL_CASES if message}
    assert messages == broken


# Values the OpenAPI schema (not CEL) refuses; pydantic must refuse them too.
SCHEMA_CASES: list[tuple[str, JSON]] = [
    ("zero-efficiency", edit(LEAF_SITE, heatRecoveryEfficiency=0)),
    ("efficiency-above-one", edit(LEAF_SITE, heatRecoveryEfficiency=1.01)),
    ("total-tank-loss", edit(LEAF_SITE, tank__lossPerHour=1)),
    ("negative-tank", edit(LEAF_SITE, tank__capacityKWh=-1)),
    ("unknown-offtaker", edit(LEAF_SITE, offtaker__kind="sauna")),
    ("zero-offtaker", edit(LEAF_SITE, offtaker__maxThermalKW=0)),
    ("empty-node-selector", edit(LEAF_SITE, nodeSelector={})),
    ("missing-tank", edit(LEAF_SITE, tank=DELETE)),
    ("english-duration", edit(LEAF_SITE, stalenessLimit="10 minutes")),
    ("negative-duration", edit(LEAF_SITE, stalenessLimit="-5m")),
    ("unitless-zero-duration", edit(LEAF_SITE, stalenessLimit="0")),
    ("ftp-url", edit(LEAF_SITE, metering__http__url="ftp://meter")),
    ("secret-without-namespace", edit(LEAF_SITE, metering__http__tokenSecretRef={"name": "s"})),
    ("snake-case-field", edit(LEAF_SITE, node_selector={"a": "b"})),
    ("unknown-field", edit(LEAF_SITE, power__wattsPerTPU=100)),
    ("float-gpu", edit(LEAF_SITE, capacity={"gpu": 1.5})),
    ("missing-selector", edit(HEAT_POLICY, selector=DELETE)),
    (
        "priority-11",
        edit(HEAT_POLICY, slaClasses=[{"name": "standard", "maxDelay": "1h", "priority": 11}]),
    ),
    ("no-classes", edit(HEAT_POLICY, slaClasses=[])),
    ("bad-class-name", edit(HEAT_POLICY, slaClasses=[{"name": "Gold Tier", "maxDelay": "1h"}])),
    (
        "bad-operator",
        edit(HEAT_POLICY, selector={"matchExpressions": [{"key": "a", "operator": "Has"}]}),
    ),
    ("negative-weight", edit(HEAT_POLICY, objective={"delayWeight": -1})),
    ("site-name-with-capitals", edit(HEAT_POLICY, sites=["Pool"])),
    ("number-as-duration", edit(HEAT_POLICY, planning={"horizon": 86400})),
]


@pytest.mark.parametrize("document", [c[1] for c in SCHEMA_CASES], ids=[c[0] for c in SCHEMA_CASES])
def test_schema_and_pydantic_refuse_the_same_values(document: JSON) -> None:
    structural, _ = admit(document)
    assert structural
    assert pydantic_error(document) is not None


DURATIONS = ["0s", "500ms", "2s", "90s", "1m", "5m", "15m", "1h", "90m", "1h30m", "24h", "2h"]


@settings(max_examples=150, deadline=None)
@given(
    horizon=st.sampled_from(DURATIONS),
    step=st.sampled_from(DURATIONS),
    replan=st.sampled_from(DURATIONS),
    limit=st.sampled_from(DURATIONS),
)
def test_planning_rules_agree_with_pydantic_for_any_durations(
    horizon: str, step: str, replan: str, limit: str
) -> None:
    planning = {
        "horizon": horizon,
        "step": step,
        "replanInterval": replan,
        "solverTimeLimit": limit,
    }
    document = edit(HEAT_POLICY, planning=planning)
    _, cel = admit(document)
    assert (cel == []) == (pydantic_error(document) is None)
    seconds = [durations.parse_duration(d) for d in (horizon, step, replan, limit)]
    h, s, r, t = seconds
    assert (cel == []) == (0 < s < h and 0 < t < r <= h)


@pytest.mark.parametrize("path", sorted(POLICIES.glob("*.yaml")), ids=lambda p: p.name)
def test_policy_examples_pass_the_cel_rules(path: pathlib.Path) -> None:
    for document in yaml.safe_load_all(path.read_text(encoding="utf-8")):
        if document and document.get("apiVersion") == resources.GROUP_VERSION:
            assert admit(document) == ([], [])


def test_cel_uses_kubernetes_duration_semantics() -> None:
    def check(rule: str) -> bool:
        return bool(cel_program(rule).evaluate({"self": celtypes.MapType()}))

    assert check("duration('1h30m') == duration('90m')")
    assert check("duration('1.5h') > duration('89m')")
    assert check("duration('500ms') < duration('1s')")
