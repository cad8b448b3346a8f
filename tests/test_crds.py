"""The generated CRDs: up to date, structural, well described, and their CEL rules enforced.

The CEL rules are evaluated for real with cel-python (``celpy``), including Kubernetes'
``duration()``: objects go through the API server's pipeline as far as it can be imitated
without one (unknown fields refused as with ``kubectl --validate=strict``, defaults applied,
OpenAPI schema, then the CEL rules of every node) and the verdict is compared with what the
pydantic models in ``heatshift.resources`` say of the same object. Patterns are matched with
RE2 (cel-python's ``matches()``), the API server's regex dialect, not Python's ``re``.

The bounds section builds, from the committed CRDs, one object per bounded field and value at
and beyond each limit (durations, numbers, label keys and values, URLs) and checks that the CRD
accepts it exactly when the models do. cel-python differs from the API server in two ways that
matter here: its durations have microsecond resolution (Go's: nanosecond), so the values step
one microsecond past a limit; and where Go's ``duration()`` fails (past 2562047h) it may not,
or fails differently. An evaluation error is a rejection, as on the API server; the e2e suite
checks the nanosecond and overflow cases against a real one.
"""

from __future__ import annotations

import copy
import dataclasses
import functools
import pathlib
import re
from collections.abc import Iterator
from typing import Any

import celpy
import celpy.adapter
import celpy.evaluation
import jsonschema
import jsonschema.validators
import pydantic
import pytest
import yaml
from celpy import celtypes
from hypothesis import given, settings
from hypothesis import strategies as st

from heatshift import bounds, crdgen, durations, resources

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
    """The messages of every CEL rule, anywhere in ``value``, that does not hold.

    A rule whose evaluation fails (``duration('99999999h')``) is broken too, as on the API
    server, which reports "<error> evaluating rule: <message>".
    """
    errors = []
    for rule in schema.get("x-kubernetes-validations", []):
        try:
            result = cel_program(rule["rule"]).evaluate({"self": to_cel(schema, value)})
        except celpy.CELEvalError as err:
            result = err
        if isinstance(result, celpy.CELEvalError):
            errors.append(f"{path or '<root>'}: {rule['message']} (evaluation error)")
            continue
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


def re2_pattern(
    validator: jsonschema.Draft4Validator, pattern: str, instance: Any, schema: JSON
) -> Iterator[jsonschema.ValidationError]:
    """``pattern`` as the API server matches it: RE2 (Go's dialect), where ``$`` is the end of
    the text (Python's also matches before a final newline) and ``\\s`` is ASCII."""
    if isinstance(instance, str) and not celpy.evaluation.function_matches(instance, pattern):
        yield jsonschema.ValidationError(f"{instance!r} does not match {pattern!r}")


APIServerValidator = jsonschema.validators.extend(
    jsonschema.Draft4Validator, {"pattern": re2_pattern}
)


@functools.cache
def strict_validator(kind: crdgen.Kind) -> jsonschema.Draft4Validator:
    validator: jsonschema.Draft4Validator = APIServerValidator(strict(root_schema(kind)))
    return validator


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
    (
        "zero-staleness",
        edit(LEAF_SITE, stalenessLimit="0s"),
        "stalenessLimit must be between 1s and 24h",
    ),
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
    ("zero-step", edit(HEAT_POLICY, planning={"step": "0s"}), "step must be between 1m and 24h"),
    (
        "replan-beyond-horizon",
        edit(HEAT_POLICY, planning={"horizon": "2h", "step": "15m", "replanInterval": "3h"}),
        "replanInterval must not be longer than horizon",
    ),
    (
        "zero-solver-time",
        edit(HEAT_POLICY, planning={"solverTimeLimit": "0ms"}),
        "solverTimeLimit must be longer than 0s and at most 5m",
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
    # The bounds table below breaks the range and label-key rules.
    for case in BOUND_CASES:
        broken |= {m.split(": ", 1)[1].removesuffix(" (evaluation error)") for m in case.cel()}
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


DURATIONS = [
    "0s",
    "500ms",
    "2s",
    "9s",
    "10s",
    "90s",
    "1m",
    "5m",
    "15m",
    "1h",
    "90m",
    "1h30m",
    "24h",
    "2h",
    "169h",
]


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
    in_range = all(
        bound.problem(x) is None
        for bound, x in zip(
            (
                bounds.PLANNING_HORIZON,
                bounds.PLANNING_STEP,
                bounds.REPLAN_INTERVAL,
                bounds.SOLVER_TIME_LIMIT,
            ),
            seconds,
            strict=True,
        )
    )
    assert (cel == []) == (in_range and s < h and t < r <= h)


# --- bounds: every bounded field, at and beyond its limits --------------------------------------
#
# Built from the committed CRDs: each duration field with the DurationRange whose CEL rule its
# object carries, each number with its minimum and maximum, each label map, label key, label
# value and URL field. A new bound in the models shows up here without a new test.

FULL_LEAF_SITE = edit(
    LEAF_SITE,
    power={"idleWatts": 500, "wattsPerGPU": 300, "wattsPerCPU": 8},
    capacity={"cpu": 16, "memoryGiB": 64, "gpu": 2},
    offtaker={
        "kind": "pool",
        "maxThermalKW": 40,
        "minSupplyTempC": 35,
        "backup": {"kind": "oil", "efficiency": 0.85, "emissionFactorKgPerKWh": 0.267},
    },
    ledger={"period": "week", "pue": 1.1},
    metering={
        "http": {
            "url": "https://meter.example/v1",
            "siteId": "pool-1",
            "timeoutSeconds": 5,
            "tokenSecretRef": {"name": "meter-token", "namespace": "heatshift"},
        }
    },
)
PROMETHEUS_LEAF_SITE = edit(
    FULL_LEAF_SITE,
    metering={
        "prometheus": {
            "url": "http://prom:9090",
            "timeoutSeconds": 5,
            "queries": {
                "demandKW": "d",
                "tankEnergyKWh": "e",
                "tankCapacityKWh": "c",
                "supplyTempC": "s",
                "returnTempC": "r",
            },
        }
    },
)
FULL_HEAT_POLICY = edit(
    HEAT_POLICY,
    namespaceSelector={
        "matchLabels": {"heatshift.dev/managed": "true"},
        "matchExpressions": [{"key": "team", "operator": "In", "values": ["render"]}],
    },
    selector={
        "matchLabels": {"app": "render"},
        "matchExpressions": [{"key": "tier", "operator": "NotIn", "values": ["web"]}],
    },
    sites=["pool"],
    slaClasses=[{"name": "standard", "maxDelay": "6h", "priority": 1}],
    objective={"usefulHeatWeight": 1000, "dumpedHeatWeight": 10, "delayWeight": 1},
    planning={"horizon": "24h", "step": "15m", "replanInterval": "5m", "solverTimeLimit": "2s"},
)
BASES = (FULL_LEAF_SITE, PROMETHEUS_LEAF_SITE, FULL_HEAT_POLICY)

Path = tuple[str | int, ...]


def spec_nodes(schema: JSON, path: Path = ()) -> Iterator[tuple[Path, JSON, JSON]]:
    """(path below ``spec``, node, parent) of every property and array item (index 0)."""
    for name, prop in schema.get("properties", {}).items():
        yield (*path, name), prop, schema
        yield from spec_nodes(prop, (*path, name))
    if isinstance(schema.get("items"), dict):
        yield (*path, 0), schema["items"], schema
        yield from spec_nodes(schema["items"], (*path, 0))


def holds(document: JSON, path: Path) -> bool:
    node: Any = document["spec"]
    for part in path:
        if isinstance(part, int):
            if not isinstance(node, list) or len(node) <= part:
                return False
        elif not isinstance(node, dict) or part not in node:
            return False
        node = node[part]
    return True


def with_value(document: JSON, path: Path, value: Any) -> JSON:
    doc = copy.deepcopy(document)
    node: Any = doc["spec"]
    for part in path[:-1]:
        node = node[part]
    node[path[-1]] = value
    return doc


DURATION_RANGES = [v for v in vars(bounds).values() if isinstance(v, bounds.DurationRange)]


def range_of(name: str, parent: JSON) -> bounds.DurationRange:
    """The DurationRange whose CEL rule for ``name`` the parent object carries."""
    rules = {(r["rule"], r["message"]) for r in parent.get("x-kubernetes-validations", [])}
    found = [b for b in DURATION_RANGES if b.cel(name) in rules]
    assert found, f"duration field {name} has no range rule from heatshift.bounds"
    # Two ranges of the same limits (planning step, forecast step) write the same rule.
    return found[0]


@dataclasses.dataclass(frozen=True)
class BoundCase:
    """One object with one bounded field set to one value, and whether the bound allows it."""

    id: str
    document: JSON
    inside: bool
    range_message: str | None = None
    """For a duration: its rule's message, present (in both answers) iff outside."""
    passes_schema: bool = True
    """False for a duration text the OpenAPI pattern or maxLength refuses before CEL."""

    def cel(self) -> list[str]:
        structural, cel = admit(self.document)
        return cel if not structural else []


def micros(us: int) -> str:
    """A duration in whole microseconds (the finest cel-python resolves)."""
    return f"{us}us"


def duration_values(bound: bounds.DurationRange) -> list[tuple[str, str, bool, bool]]:
    """(id, text, inside, passes the pattern) at and beyond the range's limits."""
    low, high = round(bound.low_s * 1e6), round(bound.high_s * 1e6)
    inclusive = bound.low_inclusive
    return [
        ("below-low", micros(low - 1), False, low >= 1),
        ("low", micros(low), inclusive, True),
        ("low-as-written", bound.low, inclusive, True),
        ("above-low", micros(low + 1), True, True),
        ("high", micros(high), True, True),
        ("high-as-written", bound.high, True, True),
        ("above-high", micros(high + 1), False, True),
        # Go reads it as 0 (whole nanoseconds), as CEL's duration() does.
        ("half-nanosecond", "0.5ns", low == 0 and inclusive, True),
        ("past-go-limit", "2562048h", False, True),
        ("99999999h", "99999999h", False, True),
        ("400-digits", "1" + "0" * 400 + "h", False, False),
    ]


def number_values(node: JSON) -> list[tuple[str, float | int, bool]]:
    """(id, value, inside) at and beyond a number's minimum and maximum."""
    integer = node["type"] == "integer"
    high, low = node["maximum"], node["minimum"]
    out: list[tuple[str, float | int, bool]] = [
        ("max", int(high) if integer else high, not node.get("exclusiveMaximum")),
        ("above-max", int(high) + 1 if integer else high * (1 + 1e-9), False),
        ("1e308", 1e308, False),
        ("-1e308", -1e308, False),
        ("min", int(low) if integer else low, not node.get("exclusiveMinimum")),
        ("below-min", int(low) - 1 if integer else low - 1e-9, False),
    ]
    if node.get("exclusiveMinimum"):
        out.append(("just-above-min", int(low) + 1 if integer else low + 1e-9, True))
    return out


LABEL_KEYS = [
    ("name", "a", True),
    ("prefixed", "heatshift.dev/site", True),
    ("name-alphabet", "A_b.c-9", True),
    ("name-63", "x" * 63, True),
    ("longest", "a" * 253 + "/" + "b" * 63, True),
    ("empty", "", False),
    ("space-and-bang", "bad key!", False),
    ("name-64", "x" * 64, False),
    ("prefix-254", "a" * 254 + "/b", False),
    ("leading-dash", "-a", False),
    ("trailing-dot", "a.", False),
    ("two-slashes", "a/b/c", False),
    ("empty-prefix", "/a", False),
    ("empty-name", "a/", False),
    ("capital-prefix", "Heatshift.dev/site", False),
    ("trailing-newline", "a\n", False),
    ("non-ascii", "\u00e4", False),
]
LABEL_VALUES = [
    ("empty", "", True),
    ("word", "pool", True),
    ("alphabet", "a.b_c-D9", True),
    ("63", "v" * 63, True),
    ("64", "v" * 64, False),
    ("space", "a b", False),
    ("slash", "a/b", False),
    ("leading-dash", "-a", False),
    ("trailing-newline", "a\n", False),
    ("non-ascii", "\u00e4", False),
]
URLS = [
    ("https-path", "https://meter.example/v1", True),
    ("ip-port-query", "http://10.0.0.1:8080/x?y=1#z", True),
    ("ipv6", "http://[::1]:9090", True),
    ("longest", "https://a/" + "x" * (bounds.MAX_URL_LENGTH - 10), True),
    ("too-long", "https://a/" + "x" * (bounds.MAX_URL_LENGTH - 9), False),
    ("no-host-query", "http://?", False),
    ("no-host-path", "http:///x", False),
    ("ftp", "ftp://meter", False),
    ("space", "http://a b", False),
    ("trailing-newline", "http://a\n", False),
    ("non-ascii-host", "http://\u00e4.example", False),
    ("port-too-long", "http://a:123456", False),
    ("host-ends-with-dot", "http://a.", False),
]


def bounded_values(
    path: Path, node: JSON, parent: JSON
) -> Iterator[tuple[str, Any, bool, dict[str, Any]]]:
    """(id, value, inside, extra BoundCase fields) for one node, if it has a bound we test."""
    pattern, kind_of = node.get("pattern"), node["type"]
    if pattern == durations.PATTERN:
        message = range_of(str(path[-1]), parent).cel(str(path[-1]))[1]
        for what, text, inside, passes in duration_values(range_of(str(path[-1]), parent)):
            yield what, text, inside, {"range_message": message, "passes_schema": passes}
    elif kind_of in ("number", "integer"):
        for what, number, inside in number_values(node):
            yield what, number, inside, {}
    elif kind_of == "object" and node.get("additionalProperties", {}).get("pattern") == (
        bounds.LABEL_VALUE
    ):
        for what, key, ok in LABEL_KEYS:
            yield f"key-{what}", {key: "v"}, ok, {}
        for what, value, ok in LABEL_VALUES:
            yield f"value-{what}", {"k": value}, ok, {}
        most = node["maxProperties"]
        yield "most-labels", {f"k{i}": "v" for i in range(most)}, True, {}
        yield "too-many-labels", {f"k{i}": "v" for i in range(most + 1)}, False, {}
    elif pattern == bounds.LABEL_KEY:
        for what, key, ok in LABEL_KEYS:
            yield f"key-{what}", key, ok, {}
    elif pattern == bounds.LABEL_VALUE:
        for what, value, ok in LABEL_VALUES:
            yield f"value-{what}", value, ok, {}
    elif pattern == bounds.HTTP_URL:
        for what, url, ok in URLS:
            yield f"url-{what}", url, ok, {}


def bound_cases() -> list[BoundCase]:
    cases = []
    for kind in crdgen.KINDS:
        bases = [b for b in BASES if b["kind"] == kind.kind]
        for path, node, parent in spec_nodes(root_schema(kind)["properties"]["spec"]):
            base = next((b for b in bases if holds(b, path[:-1])), None)
            where = f"{kind.kind}." + ".".join(map(str, path))
            assert base is not None, f"no base document holds {where}"
            for what, value, inside, extra in bounded_values(path, node, parent):
                document = with_value(base, path, value)
                cases.append(BoundCase(f"{where}={what}", document, inside, **extra))
    return cases


BOUND_CASES = bound_cases()


@pytest.mark.parametrize("case", BOUND_CASES, ids=lambda c: c.id)
def test_the_crds_and_the_models_agree_at_and_beyond_every_bound(case: BoundCase) -> None:
    structural, cel = admit(case.document)
    error = pydantic_error(case.document)
    crd_accepts, model_accepts = structural == cel == [], error is None
    assert crd_accepts == model_accepts, (structural, cel, error)
    if case.range_message is None:
        assert crd_accepts == case.inside, (structural, cel, error)
        return
    # A duration: other rules (horizon > step, ...) may refuse a value inside its range, so
    # the range's own message says whether the range took it, in both answers.
    in_cel = any(case.range_message in m for m in cel)
    in_model = error is not None and case.range_message in error
    assert in_cel == in_model, (cel, error)
    assert in_cel == (case.passes_schema and not case.inside), (cel, error)
    assert (structural == []) == case.passes_schema, structural
    if not case.inside:
        assert not crd_accepts


def test_the_bounds_table_covers_every_bounded_field() -> None:
    ids = {c.id.split("=")[0] for c in BOUND_CASES}
    ranges = {
        (c.id.split("=")[0], c.range_message) for c in BOUND_CASES if c.range_message is not None
    }
    assert {r for _, r in ranges} == {
        "stalenessLimit must be between 1s and 24h",
        "maxDelay must be between 0s and 720h",
        "horizon must be between 5m and 168h",
        "step must be between 1m and 24h",
        "replanInterval must be between 10s and 24h",
        "solverTimeLimit must be longer than 0s and at most 5m",
    }
    assert {
        "LeafSite.nodeSelector",
        "LeafSite.metering.http.url",
        "LeafSite.metering.http.timeoutSeconds",
        "LeafSite.metering.prometheus.url",
        "LeafSite.metering.prometheus.timeoutSeconds",
        "LeafSite.power.idleWatts",
        "LeafSite.capacity.gpu",
        "LeafSite.tank.capacityKWh",
        "LeafSite.offtaker.maxThermalKW",
        "HeatPolicy.selector.matchLabels",
        "HeatPolicy.namespaceSelector.matchExpressions.0.key",
        "HeatPolicy.selector.matchExpressions.0.values.0",
        "HeatPolicy.objective.usefulHeatWeight",
    } <= ids


def maxima(kind: crdgen.Kind) -> dict[str, float]:
    spec = root_schema(kind)["properties"]["spec"]
    return {
        ".".join(map(str, path)): node.get("maximum", float("nan"))
        for path, node, _ in spec_nodes(spec)
        if node["type"] in ("number", "integer")
    }


@pytest.mark.parametrize("kind", crdgen.KINDS, ids=lambda k: k.kind)
def test_every_number_is_bounded_by_heatshift_bounds(kind: crdgen.Kind) -> None:
    limits = {v for v in vars(bounds).values() if isinstance(v, (int, float))}
    limits |= {b.high_s for b in DURATION_RANGES}
    # Fractions (efficiency, tank loss) and SLA priorities are bounded by what they mean.
    limits |= {1, 10}
    for where, high in maxima(kind).items():
        assert high in limits, f"spec.{where}: maximum {high} is not one of heatshift.bounds"


def test_metering_timeouts_stay_below_the_cycle_limit() -> None:
    site = maxima(crdgen.LEAF_SITE)
    assert site["metering.http.timeoutSeconds"] == bounds.METERING_TIMEOUT.high_s
    assert site["metering.prometheus.timeoutSeconds"] == bounds.METERING_TIMEOUT.high_s


@pytest.mark.parametrize("value", [float("nan"), float("inf"), float("-inf")])
@pytest.mark.parametrize(
    "field",
    ["power__idleWatts", "tank__capacityKWh", "offtaker__maxThermalKW", "heatRecoveryEfficiency"],
)
def test_yaml_nan_and_infinity_are_refused_by_the_models(field: str, value: float) -> None:
    # JSON (what the API server takes) has neither; YAML's .nan and .inf reach the models.
    error = pydantic_error(edit(FULL_LEAF_SITE, **{field: value}))
    assert error is not None and "finite number" in error


# --- regressions: hostile input the CRDs and the models used to let through -------------------


def refused_by_both(document: JSON, message: str) -> tuple[list[str], str]:
    """(CRD errors, model error) for a document both refuse, each naming ``message``."""
    structural, cel = admit(document)
    error = pydantic_error(document)
    assert error is not None, "the models accept it"
    assert structural or cel, "the CRD accepts it"
    assert any(message in m for m in structural + cel), (structural, cel)
    assert message in error, error
    return structural + cel, error


def test_sla_class_max_delay_99999999h_is_refused_by_the_crd_and_the_models() -> None:
    classes = [{"name": "standard", "maxDelay": "99999999h"}]
    _, error = refused_by_both(
        edit(HEAT_POLICY, slaClasses=classes), "maxDelay must be between 0s and 720h"
    )
    assert "not 99999999h" in error
    # The longest allowed delay is still fine.
    assert pydantic_error(edit(HEAT_POLICY, slaClasses=[classes[0] | {"maxDelay": "720h"}])) is None


@pytest.mark.parametrize(
    ("field", "value", "message"),
    [
        ("horizon", "2000000h", "horizon must be between 5m and 168h"),
        ("horizon", "24000h", "horizon must be between 5m and 168h"),
        ("step", "25h", "step must be between 1m and 24h"),
        ("replanInterval", "48h", "replanInterval must be between 10s and 24h"),
        ("solverTimeLimit", "1h", "solverTimeLimit must be longer than 0s and at most 5m"),
    ],
)
def test_durations_without_an_upper_bound_are_refused(field: str, value: str, message: str) -> None:
    planning = {"horizon": "168h", "step": "1h", "replanInterval": "24h", "solverTimeLimit": "5m"}
    assert pydantic_error(edit(HEAT_POLICY, planning=planning)) is None
    refused_by_both(edit(HEAT_POLICY, planning=planning | {field: value}), message)


def test_staleness_limit_without_an_upper_bound_is_refused() -> None:
    refused_by_both(
        edit(LEAF_SITE, stalenessLimit="2000000h"), "stalenessLimit must be between 1s and 24h"
    )


def test_node_selector_bad_key_and_value_are_refused() -> None:
    errors, error = refused_by_both(
        edit(LEAF_SITE, nodeSelector={"bad key!": "pool"}), bounds.LABEL_KEY_WORDS
    )
    assert any("nodeSelector keys must be label keys" in m for m in errors)
    assert "'bad key!' is not a valid label key" in error
    structural, _ = admit(edit(LEAF_SITE, nodeSelector={"heatshift.dev/site": "a b"}))
    assert any("nodeSelector.heatshift.dev/site" in m for m in structural), structural
    error = pydantic_error(edit(LEAF_SITE, nodeSelector={"heatshift.dev/site": "a b"}))
    assert error is not None and "'a b' is not a valid label value" in error


@pytest.mark.parametrize("selector", ["namespaceSelector", "selector"])
def test_label_selector_bad_keys_and_values_are_refused(selector: str) -> None:
    refused_by_both(
        edit(HEAT_POLICY, **{selector: {"matchLabels": {"bad key!": "x"}}}),
        bounds.LABEL_KEY_WORDS,
    )
    for expression in (
        {"key": "bad key!", "operator": "Exists"},
        {"key": "a", "operator": "In", "values": ["a b"]},
        {"key": "a" * 254 + "/b", "operator": "Exists"},
    ):
        document = edit(HEAT_POLICY, **{selector: {"matchExpressions": [expression]}})
        structural, cel = admit(document)
        assert structural or cel, expression
        assert pydantic_error(document) is not None, expression


@pytest.mark.parametrize("source", ["http", "prometheus"])
def test_metering_timeout_above_the_cycle_limit_is_refused(source: str) -> None:
    metering = {"http": {"url": "https://meter.example/v1", "siteId": "s"}, "prometheus": PROM}
    document = edit(LEAF_SITE, metering={source: metering[source] | {"timeoutSeconds": 60}})
    structural, _ = admit(document)
    assert any("timeoutSeconds" in m and "maximum of 15" in m for m in structural), structural
    error = pydantic_error(document)
    assert (
        error is not None and "a metering timeout must be longer than 0s and at most 15s" in error
    )


@pytest.mark.parametrize("weight", ["usefulHeatWeight", "dumpedHeatWeight", "delayWeight"])
def test_objective_weights_of_1e308_are_refused(weight: str) -> None:
    document = edit(HEAT_POLICY, objective={weight: 1e308})
    structural, _ = admit(document)
    assert any(weight in m for m in structural), structural
    assert pydantic_error(document) is not None
    assert (
        pydantic_error(edit(HEAT_POLICY, objective={weight: bounds.MAX_OBJECTIVE_WEIGHT})) is None
    )


@pytest.mark.parametrize("url", ["http://?", "http:///x", "https://", "http://a b"])
def test_urls_without_a_host_are_refused(url: str) -> None:
    for metering in ({"http": {"url": url, "siteId": "s"}}, {"prometheus": PROM | {"url": url}}):
        document = edit(LEAF_SITE, metering=metering)
        structural, _ = admit(document)
        assert any("url" in m for m in structural), structural
        error = pydantic_error(document)
        assert error is not None and "is not an http:// or https:// URL with a host" in error


@pytest.mark.parametrize(
    ("field", "value", "message"),
    [
        ("solverTimeLimit", "0.5ns", "solverTimeLimit must be longer than 0s and at most 5m"),
        ("step", "0.5ns", "step must be between 1m and 24h"),
        ("horizon", "99999999h", "horizon must be between 5m and 168h"),
        ("horizon", "2562048h", "horizon must be between 5m and 168h"),
    ],
)
def test_models_refuse_the_durations_the_cel_rules_refuse(
    field: str, value: str, message: str
) -> None:
    refused_by_both(edit(HEAT_POLICY, planning={field: value}), message)


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("power__wattsPerGPU", 1e308),
        ("power__idleWatts", bounds.MAX_SITE_POWER_WATTS * 2),
        ("tank__capacityKWh", bounds.MAX_TANK_CAPACITY_KWH * 2),
        ("offtaker__maxThermalKW", bounds.MAX_THERMAL_KW * 2),
        ("capacity", {"cpu": bounds.MAX_CPU_CORES * 2}),
        ("capacity", {"memoryGiB": 1e308}),
        ("capacity", {"gpu": bounds.MAX_GPUS + 1}),
        ("heatRecoveryEfficiency", 1e308),
    ],
)
def test_numbers_beyond_physical_ranges_are_refused(field: str, value: Any) -> None:
    document = edit(LEAF_SITE, **{field: value})
    structural, _ = admit(document)
    assert structural
    assert pydantic_error(document) is not None


def readme_limit(field: str) -> str:
    """The "Allowed" cell of ``field``'s row in the README's Limits table."""
    for line in (ROOT / "README.md").read_text(encoding="utf-8").splitlines():
        if line.startswith(f"| {field} |"):
            return line.split("|")[2].strip()
    raise AssertionError(f"README's Limits table has no row {field}")


@pytest.mark.parametrize(
    ("field", "bound"),
    [
        ("HeatPolicy `planning.horizon`", bounds.PLANNING_HORIZON),
        ("HeatPolicy `planning.step`", bounds.PLANNING_STEP),
        ("HeatPolicy `planning.replanInterval`", bounds.REPLAN_INTERVAL),
        ("HeatPolicy `planning.solverTimeLimit`", bounds.SOLVER_TIME_LIMIT),
        ("HeatPolicy `slaClasses[].maxDelay`", bounds.MAX_DELAY),
        ("LeafSite `stalenessLimit`", bounds.STALENESS_LIMIT),
        ("LeafSite `metering.*.timeoutSeconds`", bounds.METERING_TIMEOUT),
    ],
)
def test_the_readme_states_the_duration_limits(field: str, bound: bounds.DurationRange) -> None:
    # timeoutSeconds is a number of seconds, the others Go durations.
    low, high = (
        (f"{bound.low_s:g}", f"{bound.high_s:g}") if "Seconds" in field else (bound.low, bound.high)
    )
    expected = f"{low} to {high}" if bound.low_inclusive else f"above {low}, at most {high}"
    assert readme_limit(field).startswith(expected)


def test_the_readme_states_the_number_limits() -> None:
    assert (
        readme_limit("HeatPolicy `objective.*Weight`") == f"0 to {bounds.MAX_OBJECTIVE_WEIGHT:.0f}"
    )
    assert readme_limit("LeafSite `power.*` (W)") == f"0 to {bounds.MAX_SITE_POWER_WATTS:.0f}"
    assert readme_limit("LeafSite `tank.capacityKWh`") == f"0 to {bounds.MAX_TANK_CAPACITY_KWH:.0f}"
    assert readme_limit("LeafSite `offtaker.maxThermalKW`") == (
        f"above 0, at most {bounds.MAX_THERMAL_KW:.0f}"
    )
    assert readme_limit("LeafSite `capacity.cpu` / `memoryGiB` / `gpu`") == (
        f"at most {bounds.MAX_CPU_CORES:.0f} / {bounds.MAX_MEMORY_GIB:.0f} / {bounds.MAX_GPUS}"
    )
    assert str(bounds.MAX_URL_LENGTH) in readme_limit("LeafSite `metering.*.url`")


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
