"""The LeafSite and HeatPolicy models: parsing, defaults, conversion to the domain model.

Cross-field rules are tested against the CRDs' CEL rules in test_crds.py; here is what the
operator relies on when it reads a spec (durations, label selectors, ``to_site``,
``planner_config``) and writes a status.
"""

from __future__ import annotations

import ast
import copy
import datetime
import pathlib
from typing import Any

import pydantic
import pytest
from hypothesis import given
from hypothesis import strategies as st

from heatshift import durations, model, resources
from heatshift.planner import config

LEAF_SITE_SPEC: dict[str, Any] = {
    "nodeSelector": {"heatshift.dev/site": "pool"},
    "power": {"idleWatts": 500, "wattsPerGPU": 300, "wattsPerCPU": 8},
    "tank": {"capacityKWh": 50},
    "offtaker": {"kind": "pool", "maxThermalKW": 40},
    "metering": {"http": {"url": "https://meter.example/v1", "siteId": "pool-1"}},
}

HEAT_POLICY_SPEC: dict[str, Any] = {"namespaceSelector": {}, "selector": {}}

ALLOCATABLE = model.Resources(cpu=64, memory_gib=256, gpu=4)


def leaf_site(**changes: Any) -> resources.LeafSiteSpec:
    return resources.LeafSiteSpec.model_validate(LEAF_SITE_SPEC | changes)


def heat_policy(**changes: Any) -> resources.HeatPolicySpec:
    return resources.HeatPolicySpec.model_validate(HEAT_POLICY_SPEC | changes)


# --- durations ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "seconds"),
    [
        ("0", 0.0),
        ("0s", 0.0),
        ("90s", 90.0),
        ("15m", 900.0),
        ("1h30m", 5400.0),
        ("1.5h", 5400.0),
        (".5h", 1800.0),
        ("1h0m0s", 3600.0),
        ("500ms", 0.5),
        ("250us", 250e-6),
        ("250\u00b5s", 250e-6),
        ("-5m", -300.0),
        ("+2s", 2.0),
    ],
)
def test_parse_duration_reads_go_durations(text: str, seconds: float) -> None:
    assert durations.parse_duration(text) == pytest.approx(seconds)


@pytest.mark.parametrize(
    "text", ["", "5", "h", ".", "1d", "10 minutes", " 5m", "5m ", "1h-5m", "--1s"]
)
def test_parse_duration_refuses_what_go_refuses(text: str) -> None:
    with pytest.raises(durations.DurationError, match="invalid duration"):
        durations.parse_duration(text)


@given(st.integers(min_value=-(10**6), max_value=10**6))
def test_format_duration_round_trips_whole_seconds(seconds: int) -> None:
    text = durations.format_duration(seconds)
    assert durations.parse_duration(text) == seconds


def test_format_duration_is_short() -> None:
    assert durations.format_duration(5400) == "1h30m"
    assert durations.format_duration(0) == "0s"
    assert durations.format_duration(3601) == "1h1s"


# --- LeafSite ----------------------------------------------------------------------------------


def test_leaf_site_defaults() -> None:
    spec = leaf_site()
    assert spec.heat_recovery_efficiency == 0.85
    assert spec.tank.loss_per_hour == 0.01
    assert spec.staleness_limit == "10m" and spec.staleness_limit_s == 600.0
    assert spec.capacity is None
    http = spec.metering.http
    assert http is not None and spec.metering.prometheus is None
    assert http.timeout_seconds == 5.0 and http.insecure_skip_tls_verify is False
    assert http.token_secret_ref is None


def test_to_site_uses_node_allocatable_without_an_override() -> None:
    site = leaf_site(heatRecoveryEfficiency=0.9).to_site("pool", ALLOCATABLE)
    assert site == model.Site(
        name="pool",
        capacity=ALLOCATABLE,
        power=model.PowerModel(idle_watts=500, watts_per_gpu=300, watts_per_cpu=8),
        heat_recovery_efficiency=0.9,
        tank=model.Tank(capacity_kwh=50, loss_per_hour=0.01),
        offtaker=model.Offtaker(kind=model.OfftakerKind.POOL, max_thermal_kw=40),
    )


def test_capacity_override_replaces_only_the_dimensions_it_sets() -> None:
    spec = leaf_site(capacity={"cpu": 16, "gpu": 0})
    assert spec.to_site("pool", ALLOCATABLE).capacity == model.Resources(
        cpu=16, memory_gib=256, gpu=0
    )
    full = leaf_site(capacity={"cpu": 8, "memoryGiB": 32, "gpu": 1})
    assert full.to_site("pool", ALLOCATABLE).capacity == model.Resources(
        cpu=8, memory_gib=32, gpu=1
    )


def test_to_site_wraps_domain_errors() -> None:
    with pytest.raises(resources.ResourceError, match="LeafSite ''") as info:
        leaf_site().to_site("", ALLOCATABLE)
    assert isinstance(info.value.__cause__, pydantic.ValidationError)


@pytest.mark.parametrize("kind", list(model.OfftakerKind))
def test_every_offtaker_kind_converts(kind: model.OfftakerKind) -> None:
    spec = leaf_site(offtaker={"kind": kind.value, "maxThermalKW": 10})
    assert spec.to_site("s", ALLOCATABLE).offtaker.kind is kind


def test_prometheus_metering_parses() -> None:
    spec = leaf_site(
        metering={
            "prometheus": {
                "url": "http://prometheus:9090",
                "queries": {"demandKW": "sum(demand)", "tankEnergyKWh": "tank", "supplyTempC": "t"},
            }
        }
    )
    prom = spec.metering.prometheus
    assert prom is not None and spec.metering.http is None
    assert prom.queries.demand_kw == "sum(demand)"
    assert prom.queries.tank_capacity_kwh is None and prom.queries.supply_temp_c == "t"


def test_secret_ref_key_defaults_to_token() -> None:
    http = dict(LEAF_SITE_SPEC["metering"]["http"])
    http["tokenSecretRef"] = {"name": "meter", "namespace": "heatshift-system"}
    spec = leaf_site(metering={"http": http})
    assert spec.metering.http is not None
    ref = spec.metering.http.token_secret_ref
    assert ref is not None and ref.key == "token"


def test_yaml_names_only_and_unknown_fields_refused() -> None:
    bad = copy.deepcopy(LEAF_SITE_SPEC)
    bad["tank"] = {"capacity_kwh": 50}
    with pytest.raises(pydantic.ValidationError, match="capacityKWh"):
        resources.LeafSiteSpec.model_validate(bad)


def test_specs_are_frozen() -> None:
    spec = leaf_site()
    with pytest.raises(pydantic.ValidationError):
        spec.tank.capacity_kwh = 1.0


def test_to_dict_round_trips_with_yaml_names() -> None:
    spec = leaf_site(capacity={"gpu": 2})
    data = spec.to_dict()
    assert data["nodeSelector"] == {"heatshift.dev/site": "pool"}
    assert data["tank"] == {"capacityKWh": 50.0, "lossPerHour": 0.01}
    assert data["capacity"] == {"gpu": 2}
    assert resources.LeafSiteSpec.model_validate(data) == spec


def test_leaf_site_status_serialises_for_a_status_patch() -> None:
    observed = datetime.datetime(2025, 1, 6, 7, 30, tzinfo=datetime.UTC)
    status = resources.LeafSiteStatus.model_validate(
        {
            "demandKW": 32.5,
            "tankEnergyKWh": 12.0,
            "tankPercent": 40.0,
            "itLoadKW": 18.0,
            "meteringObservedAt": observed,
            "meteringAgeSeconds": 12.0,
            "heatAware": True,
            "conditions": [
                {
                    "type": resources.CONDITION_METERING_FRESH,
                    "status": "True",
                    "reason": "ReadingValid",
                    "lastTransitionTime": observed,
                    "observedGeneration": 3,
                }
            ],
        }
    )
    data = status.to_dict()
    assert data["meteringObservedAt"] == "2025-01-06T07:30:00Z"
    assert data["conditions"][0] == {
        "type": "MeteringFresh",
        "status": "True",
        "reason": "ReadingValid",
        "message": "",
        "lastTransitionTime": "2025-01-06T07:30:00Z",
        "observedGeneration": 3,
    }
    assert "heatDumpedKWh" not in data
    assert resources.LeafSiteStatus.model_validate(data) == status


def test_tank_percent_is_bounded() -> None:
    with pytest.raises(pydantic.ValidationError):
        resources.LeafSiteStatus.model_validate({"tankPercent": 101})


# --- label selectors ---------------------------------------------------------------------------

LABELS = {"team": "ml", "tier": "batch"}


@pytest.mark.parametrize(
    ("selector", "labels", "matches"),
    [
        ({}, {}, True),
        ({}, LABELS, True),
        ({"matchLabels": {"team": "ml"}}, LABELS, True),
        ({"matchLabels": {"team": "web"}}, LABELS, False),
        ({"matchLabels": {"team": "ml", "gpu": "yes"}}, LABELS, False),
        (
            {"matchExpressions": [{"key": "tier", "operator": "In", "values": ["batch"]}]},
            LABELS,
            True,
        ),
        (
            {"matchExpressions": [{"key": "tier", "operator": "In", "values": ["web"]}]},
            LABELS,
            False,
        ),
        ({"matchExpressions": [{"key": "zone", "operator": "In", "values": ["a"]}]}, LABELS, False),
        (
            {"matchExpressions": [{"key": "tier", "operator": "NotIn", "values": ["web"]}]},
            LABELS,
            True,
        ),
        (
            {"matchExpressions": [{"key": "zone", "operator": "NotIn", "values": ["a"]}]},
            LABELS,
            True,
        ),
        (
            {"matchExpressions": [{"key": "tier", "operator": "NotIn", "values": ["batch"]}]},
            LABELS,
            False,
        ),
        ({"matchExpressions": [{"key": "team", "operator": "Exists"}]}, LABELS, True),
        ({"matchExpressions": [{"key": "zone", "operator": "Exists"}]}, LABELS, False),
        ({"matchExpressions": [{"key": "zone", "operator": "DoesNotExist"}]}, LABELS, True),
        ({"matchExpressions": [{"key": "team", "operator": "DoesNotExist"}]}, LABELS, False),
        (
            {
                "matchLabels": {"team": "ml"},
                "matchExpressions": [{"key": "tier", "operator": "NotIn", "values": ["batch"]}],
            },
            LABELS,
            False,
        ),
    ],
)
def test_label_selector_matches_like_kubernetes(
    selector: dict[str, Any], labels: dict[str, str], matches: bool
) -> None:
    assert resources.LabelSelector.model_validate(selector).matches(labels) is matches


# --- HeatPolicy --------------------------------------------------------------------------------


def test_heat_policy_defaults() -> None:
    spec = heat_policy()
    assert [c.name for c in spec.sla_classes] == ["standard"]
    assert spec.sla_classes[0].max_delay_s == 6 * 3600
    assert spec.default_sla_class == "standard"
    assert spec.sites == ()
    assert spec.hold_bare_pods is False
    assert spec.planning.horizon == "24h" and spec.planning.step == "15m"
    assert spec.replan_interval_s == 300.0


def test_planner_config_takes_the_policy_settings() -> None:
    spec = heat_policy(
        planning={
            "horizon": "48h",
            "step": "10m",
            "replanInterval": "2m",
            "solverTimeLimit": "1.5s",
        },
        objective={"usefulHeatWeight": 500, "dumpedHeatWeight": 5, "delayWeight": 2},
    )
    cfg = spec.planner_config()
    assert cfg.horizon_s == 48 * 3600
    assert cfg.step_s == 600
    assert cfg.time_limit_s == 1.5
    assert (cfg.useful_heat_weight, cfg.dumped_heat_weight, cfg.delay_weight) == (500, 5, 2)
    defaults = config.PlannerConfig()
    assert cfg.model_dump(exclude={"horizon_s", "step_s", "time_limit_s"} | WEIGHTS) == (
        defaults.model_dump(exclude={"horizon_s", "step_s", "time_limit_s"} | WEIGHTS)
    )


WEIGHTS = {"useful_heat_weight", "dumped_heat_weight", "delay_weight"}


def test_default_policy_gives_the_planner_defaults() -> None:
    assert heat_policy().planner_config() == config.PlannerConfig()


def test_planner_config_keeps_what_the_policy_does_not_set() -> None:
    base = config.PlannerConfig(workers=8, seed=42, fine_span_s=3600)
    cfg = heat_policy().planner_config(base)
    assert (cfg.workers, cfg.seed, cfg.fine_span_s) == (8, 42, 3600)


def test_sla_class_lookup_falls_back_to_the_default() -> None:
    spec = heat_policy(
        slaClasses=[
            {"name": "urgent", "maxDelay": "1h", "priority": 9},
            {"name": "whenever", "maxDelay": "48h", "priority": 0},
        ],
        defaultSLAClass="whenever",
    )
    assert spec.sla_class("urgent").priority == 9
    assert spec.sla_class(None).name == "whenever"
    assert spec.sla_class("no-such-class").name == "whenever"
    assert spec.sla_class("whenever").max_delay_s == 48 * 3600


def test_heat_policy_status_round_trips() -> None:
    status = resources.HeatPolicyStatus.model_validate(
        {
            "held": 12,
            "released": 40,
            "deadlineForcedReleases": 2,
            "expectedUsefulHeatKWh": 310.5,
            "lastPlanTime": "2025-01-06T07:30:00Z",
            "solverStatus": "feasible",
            "solverSeconds": 2.0,
        }
    )
    assert status.solver_status is model.SolveStatus.FEASIBLE
    assert resources.HeatPolicyStatus.model_validate(status.to_dict()) == status


# --- whole objects -----------------------------------------------------------------------------


def document(kind: str, spec: dict[str, Any], **extra: Any) -> dict[str, Any]:
    return {
        "apiVersion": "heatshift.dev/v1alpha1",
        "kind": kind,
        "metadata": {"name": "pool", "uid": "1234", "resourceVersion": "7", "generation": 2},
        "spec": spec,
    } | extra


def test_parse_resource_dispatches_on_kind_and_ignores_server_metadata() -> None:
    site = resources.parse_resource(document("LeafSite", LEAF_SITE_SPEC))
    assert isinstance(site, resources.LeafSite)
    assert site.metadata.name == "pool" and site.metadata.generation == 2
    assert site.to_site(ALLOCATABLE).name == "pool"
    policy = resources.parse_resource(document("HeatPolicy", HEAT_POLICY_SPEC, status={"held": 1}))
    assert isinstance(policy, resources.HeatPolicy)
    assert policy.status is not None and policy.status.held == 1


@pytest.mark.parametrize(
    "doc",
    [
        {"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "x"}},
        {"apiVersion": "heatshift.dev/v1beta1", "kind": "LeafSite", "metadata": {"name": "x"}},
        {"apiVersion": "heatshift.dev/v1alpha1", "kind": "Leafsite", "metadata": {"name": "x"}},
    ],
)
def test_parse_resource_refuses_other_kinds(doc: dict[str, Any]) -> None:
    with pytest.raises(resources.ResourceError, match="not a heatshift resource"):
        resources.parse_resource(doc)


def test_parse_resource_names_the_invalid_object() -> None:
    with pytest.raises(resources.ResourceError, match="invalid HeatPolicy 'pool'") as info:
        resources.parse_resource(document("HeatPolicy", {"selector": {}}))
    assert isinstance(info.value.__cause__, pydantic.ValidationError)


def test_the_decision_core_does_not_import_the_resources() -> None:
    package = pathlib.Path(resources.__file__).parent
    core = [
        package / "model.py",
        package / "thermal.py",
        *sorted((package / "planner").glob("*.py")),
    ]
    for path in core:
        tree = ast.parse(path.read_text(encoding="utf-8"))
        for node in ast.walk(tree):
            names: list[str] = []
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom):
                names = [f"{node.module}.{a.name}" for a in node.names]
            for name in names:
                assert "resources" not in name and "crdgen" not in name, (path, name)
