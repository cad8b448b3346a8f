"""CustomResourceDefinitions for LeafSite and HeatPolicy, generated from ``heatshift.resources``.

Owns the translation of the pydantic models' JSON Schema into Kubernetes' structural OpenAPI v3
schema ($refs inlined, optional fields omitted rather than null, OpenAPI 3.0 exclusive bounds,
CEL rules carried over), plus each resource's names, printer columns and status subresource.
Also owns :func:`apply_defaults`, the API server's defaulting, so tests can see an object as the
server would store it.

Run as ``python -m heatshift.crdgen crds/`` to write the manifests, or with ``--check`` to fail
when the committed ones differ (the tests do the same). Called by developers, the Helm chart's
tooling and the tests; nothing at run time imports it.
"""

from __future__ import annotations

import argparse
import copy
import dataclasses
import pathlib
import sys
from collections.abc import Sequence
from typing import Any

import pydantic
import yaml

from heatshift import resources

JSON = dict[str, Any]

HEADER = (
    "# Generated from heatshift/resources.py by `python -m heatshift.crdgen crds/`.\n"
    "# Do not edit by hand: change the models and regenerate (tests/test_crds.py checks).\n"
)

_KEY_ORDER = (
    "description",
    "type",
    "format",
    "enum",
    "default",
    "nullable",
    "minimum",
    "exclusiveMinimum",
    "maximum",
    "exclusiveMaximum",
    "minLength",
    "maxLength",
    "pattern",
    "minItems",
    "maxItems",
    "minProperties",
    "maxProperties",
    "required",
    "properties",
    "additionalProperties",
    "items",
    "x-kubernetes-list-type",
    "x-kubernetes-list-map-keys",
    "x-kubernetes-validations",
)
_DROPPED = frozenset({"title"})


class CRDGenError(Exception):
    """A model that cannot be expressed as a structural schema (e.g. a union of two types)."""


@dataclasses.dataclass(frozen=True)
class PrinterColumn:
    """One column of ``kubectl get``; priority 1 shows only with ``-o wide``."""

    name: str
    type: str
    json_path: str
    description: str
    priority: int = 0

    def to_dict(self) -> JSON:
        out: JSON = {
            "name": self.name,
            "type": self.type,
            "jsonPath": self.json_path,
            "description": self.description,
        }
        if self.priority:
            out["priority"] = self.priority
        return out


AGE = PrinterColumn("Age", "date", ".metadata.creationTimestamp", "Time since creation.")


@dataclasses.dataclass(frozen=True)
class Kind:
    """Everything about one custom resource that is not in its models."""

    kind: str
    plural: str
    singular: str
    short_names: tuple[str, ...]
    spec: type[pydantic.BaseModel]
    status: type[pydantic.BaseModel]
    description: str
    columns: tuple[PrinterColumn, ...]
    categories: tuple[str, ...] = ("heatshift",)

    @property
    def crd_name(self) -> str:
        return f"{self.plural}.{resources.API_GROUP}"


LEAF_SITE = Kind(
    kind="LeafSite",
    plural="leafsites",
    singular="leafsite",
    short_names=("lsite",),
    spec=resources.LeafSiteSpec,
    status=resources.LeafSiteStatus,
    description=(
        "A LeafSite is a micro data centre in a building that wants its heat: the nodes it runs "
        "on, its power model, its buffer tank, the offtaker that takes the heat and where the "
        "heat demand and tank readings come from."
    ),
    columns=(
        PrinterColumn("Demand-kW", "number", ".status.demandKW", "Offtaker heat demand, kW."),
        PrinterColumn("Tank-%", "number", ".status.tankPercent", "Tank state of charge, %."),
        PrinterColumn("IT-load-kW", "number", ".status.itLoadKW", "Electrical IT load, kW."),
        PrinterColumn(
            "Metering-age",
            "date",
            ".status.meteringObservedAt",
            "Time since the last valid metering reading.",
        ),
        PrinterColumn(
            "Heat-aware", "boolean", ".status.heatAware", "Whether the site plans with its heat."
        ),
        PrinterColumn("Offtaker", "string", ".spec.offtaker.kind", "What takes the heat.", 1),
        PrinterColumn(
            "Tank-kWh", "number", ".status.tankEnergyKWh", "Energy stored in the tank, kWh.", 1
        ),
        PrinterColumn(
            "Delivered-kWh",
            "number",
            ".status.heatDeliveredKWh",
            "Heat delivered this ledger period, kWh.",
            1,
        ),
        PrinterColumn(
            "ERE", "number", ".status.ledger.current.ere", "Energy Reuse Effectiveness.", 1
        ),
        AGE,
    ),
)

HEAT_POLICY = Kind(
    kind="HeatPolicy",
    plural="heatpolicies",
    singular="heatpolicy",
    short_names=("hpol",),
    spec=resources.HeatPolicySpec,
    status=resources.HeatPolicyStatus,
    description=(
        "A HeatPolicy selects the workloads heatshift holds and releases where and when their "
        "heat is wanted, with the SLA classes that bound how long they may wait, the objective "
        "weights and the planning horizon."
    ),
    columns=(
        PrinterColumn("Held", "integer", ".status.held", "Workloads held now."),
        PrinterColumn("Released", "integer", ".status.released", "Workloads released so far."),
        PrinterColumn(
            "Expected-useful-kWh",
            "number",
            ".status.expectedUsefulHeatKWh",
            "Useful heat the current plan expects to deliver, kWh.",
        ),
        PrinterColumn("Solver", "string", ".status.solverStatus", "Outcome of the last solve."),
        PrinterColumn(
            "Deadline-forced",
            "integer",
            ".status.deadlineForcedReleases",
            "Releases forced by a deadline.",
            1,
        ),
        PrinterColumn(
            "Last-plan", "date", ".status.lastPlanTime", "Time since the last plan was made.", 1
        ),
        AGE,
    ),
)

KINDS: tuple[Kind, ...] = (LEAF_SITE, HEAT_POLICY)


# --- JSON Schema -> structural OpenAPI v3 ------------------------------------------------------


def openapi_schema(model_cls: type[pydantic.BaseModel]) -> JSON:
    """The structural OpenAPI v3 schema of ``model_cls`` as it reads in YAML (camelCase)."""
    raw = model_cls.model_json_schema(by_alias=True, mode="validation")
    defs: JSON = raw.pop("$defs", {})
    return _structural(raw, defs, path=model_cls.__name__)


def _resolve(node: JSON, defs: JSON, path: str) -> JSON:
    """``node`` with a ``$ref``, a one-element ``allOf`` or an ``anyOf`` with null folded in."""
    node = dict(node)
    target: JSON | None = None
    if "$ref" in node:
        target = defs[node.pop("$ref").rsplit("/", 1)[-1]]
    elif "allOf" in node:
        (target,) = node.pop("allOf")
    elif "anyOf" in node:
        options = [o for o in node.pop("anyOf") if o != {"type": "null"}]
        if len(options) != 1:
            raise CRDGenError(f"{path}: a union of several types has no structural schema")
        (target,) = options
        if node.get("default", 0) is None:
            del node["default"]
    if target is None:
        return node
    # The field's own keys (description, default, extras) win over the referenced definition's.
    merged = _resolve(target, defs, path)
    merged.update(node)
    return merged


def _structural(node: JSON, defs: JSON, path: str) -> JSON:
    node = _resolve(node, defs, path)
    out: JSON = {}
    for key, value in node.items():
        if key in _DROPPED or (key == "additionalProperties" and value is False):
            continue
        if key in ("exclusiveMinimum", "exclusiveMaximum") and not isinstance(value, bool):
            out["minimum" if key == "exclusiveMinimum" else "maximum"] = value
            out[key] = True
        elif key == "properties":
            out[key] = {k: _structural(v, defs, f"{path}.{k}") for k, v in value.items()}
        elif key in ("items", "additionalProperties") and isinstance(value, dict):
            out[key] = _structural(value, defs, f"{path}[]")
        else:
            out[key] = value
    if "type" not in out:
        raise CRDGenError(f"{path}: no type")
    _tidy_default(out)
    return {k: out[k] for k in sorted(out, key=_key_rank)}


def _tidy_default(node: JSON) -> None:
    """Drop empty-collection defaults (absent and empty mean the same to every reader).

    Object defaults stay written out in full: the API server checks a default against the
    node's CEL rules without filling in the defaults nested inside it, so ``{}`` would fail.
    """
    if node.get("default") in ([], {}):
        del node["default"]


def _key_rank(key: str) -> tuple[int, str]:
    return (_KEY_ORDER.index(key) if key in _KEY_ORDER else len(_KEY_ORDER), key)


def apply_defaults(schema: JSON, value: Any) -> Any:
    """``value`` with the schema's defaults filled in, as the API server stores it.

    A missing property with a default gets a copy of it, and defaulting goes on inside the
    copy; present values are defaulted recursively. Returns a new value.
    """
    value = copy.deepcopy(value)
    _default_in_place(schema, value)
    return value


def _default_in_place(schema: JSON, value: Any) -> None:
    if isinstance(value, dict):
        for name, prop in schema.get("properties", {}).items():
            if name not in value and prop.get("default") is not None:
                value[name] = copy.deepcopy(prop["default"])
            if name in value:
                _default_in_place(prop, value[name])
        extra = schema.get("additionalProperties")
        if isinstance(extra, dict):
            for item in value.values():
                _default_in_place(extra, item)
    elif isinstance(value, list) and isinstance(schema.get("items"), dict):
        for item in value:
            _default_in_place(schema["items"], item)


# --- the CRDs ----------------------------------------------------------------------------------


def resource_schema(kind: Kind) -> JSON:
    """The whole object's schema: apiVersion, kind, metadata, spec and status."""
    return {
        "description": kind.description,
        "type": "object",
        "required": ["spec"],
        "properties": {
            "apiVersion": {
                "description": "APIVersion defines the versioned schema of this representation "
                "of an object: heatshift.dev/v1alpha1.",
                "type": "string",
            },
            "kind": {
                "description": f"Kind is the type of this object: {kind.kind}.",
                "type": "string",
            },
            "metadata": {"type": "object"},
            "spec": openapi_schema(kind.spec),
            "status": openapi_schema(kind.status),
        },
    }


def crd(kind: Kind) -> JSON:
    """The CustomResourceDefinition of ``kind``."""
    return {
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {
            "name": kind.crd_name,
            "labels": {
                "app.kubernetes.io/name": "heatshift",
                "app.kubernetes.io/part-of": "heatshift",
            },
        },
        "spec": {
            "group": resources.API_GROUP,
            "names": {
                "kind": kind.kind,
                "listKind": f"{kind.kind}List",
                "plural": kind.plural,
                "singular": kind.singular,
                "shortNames": list(kind.short_names),
                "categories": list(kind.categories),
            },
            "scope": "Cluster",
            "versions": [
                {
                    "name": resources.API_VERSION,
                    "served": True,
                    "storage": True,
                    "schema": {"openAPIV3Schema": resource_schema(kind)},
                    "subresources": {"status": {}},
                    "additionalPrinterColumns": [c.to_dict() for c in kind.columns],
                }
            ],
        },
    }


class _Dumper(yaml.SafeDumper):
    """Writes repeated sub-schemas out in full: no YAML anchors in a CRD."""

    def ignore_aliases(self, data: Any) -> bool:
        return True


def render(kind: Kind) -> str:
    """The CRD of ``kind`` as the YAML text committed in ``crds/``."""
    body = yaml.dump(crd(kind), Dumper=_Dumper, sort_keys=False, allow_unicode=True, width=100)
    return HEADER + body


def file_name(kind: Kind) -> str:
    return f"{kind.crd_name}.yaml"


def write(directory: pathlib.Path) -> list[pathlib.Path]:
    """Write every CRD into ``directory``; returns the paths written."""
    directory.mkdir(parents=True, exist_ok=True)
    written = []
    for kind in KINDS:
        path = directory / file_name(kind)
        path.write_text(render(kind), encoding="utf-8")
        written.append(path)
    return written


def stale(directory: pathlib.Path) -> list[pathlib.Path]:
    """The CRD files in ``directory`` that are missing or differ from the generator's output."""
    out = []
    for kind in KINDS:
        path = directory / file_name(kind)
        if not path.is_file() or path.read_text(encoding="utf-8") != render(kind):
            out.append(path)
    return out


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m heatshift.crdgen",
        description="Generate the LeafSite and HeatPolicy CRDs from heatshift.resources.",
    )
    parser.add_argument("directory", type=pathlib.Path, help="where the CRD YAML files go")
    parser.add_argument(
        "--check", action="store_true", help="write nothing; exit 1 if the files are out of date"
    )
    args = parser.parse_args(argv)
    if args.check:
        out_of_date = stale(args.directory)
        for path in out_of_date:
            sys.stderr.write(f"{path}: out of date; run python -m heatshift.crdgen\n")
        return 1 if out_of_date else 0
    for path in write(args.directory):
        sys.stdout.write(f"wrote {path}\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
