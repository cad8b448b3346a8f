"""The LeafSite and HeatPolicy custom resources (``heatshift.dev/v1alpha1``, cluster-scoped).

Owns the pydantic models of both resources' ``spec`` and ``status`` exactly as they appear in
YAML (camelCase aliases, unknown fields rejected, frozen), the CEL rules the API server enforces
on them, and their conversion to the domain model: :meth:`LeafSiteSpec.to_site` gives a
:class:`heatshift.model.Site`, :meth:`HeatPolicySpec.planner_config` a
:class:`heatshift.planner.config.PlannerConfig`.

These models are the single source of the CRDs: ``heatshift.crdgen`` turns them into the
OpenAPI schemas in ``crds/``. Every cross-field rule is written twice, side by side: as CEL
(``x-kubernetes-validations``, enforced by the API server) and as a pydantic validator
(enforced when the operator, the simulator or a test parses a spec), and the tests check that
both agree. Every bound on a field (durations, physical numbers, label keys and values, URLs)
comes from :mod:`heatshift.bounds`; a duration field names its :class:`~heatshift.bounds.
DurationRange` once, in its type, and both its CEL rule and its validator derive from it.
Callers: the operator's Kubernetes adapter (reads specs, writes statuses),
``crdgen``, and the tests over ``policies/``. The decision core never imports this module.
"""

from __future__ import annotations

import datetime
import enum
from collections.abc import Callable, Mapping
from typing import Annotated, Any, Literal

import pydantic
from pydantic import AfterValidator, BaseModel, ConfigDict, Field, model_validator

from heatshift import bounds, durations, model
from heatshift.planner import config

API_GROUP = "heatshift.dev"
API_VERSION = "v1alpha1"
GROUP_VERSION = f"{API_GROUP}/{API_VERSION}"

DURATION_PATTERN = durations.PATTERN
"""What a duration field accepts: Go duration syntax, non-negative, e.g. ``90s``, ``1h30m``."""

DNS_LABEL = bounds.DNS_LABEL
DNS_SUBDOMAIN = bounds.DNS_SUBDOMAIN
HTTP_URL = bounds.HTTP_URL

CONDITION_READY = "Ready"
"""Condition type on both resources: the object is valid and in use."""
CONDITION_METERING_FRESH = "MeteringFresh"
"""LeafSite condition: the last metering reading was valid and younger than the staleness limit."""
CONDITION_PLANNED = "Planned"
"""HeatPolicy condition: the last planning cycle produced a plan."""
CONDITION_METER_REGISTERS = "MeterRegistersValid"
"""LeafSite: whether the meter's cumulative registers were accepted by the ledger."""


class ResourceError(ValueError):
    """A LeafSite or HeatPolicy that cannot be used as given (wraps the validation error)."""


def _raise_problem(check: Callable[[str], str | None]) -> AfterValidator:
    """A validator raising the problem ``check`` finds (a message, or None) as the error."""

    def validate(value: str) -> str:
        why = check(value)
        if why is not None:
            raise ValueError(why)
        return value

    return AfterValidator(validate)


LabelKey = Annotated[str, _raise_problem(bounds.label_key_problem)]
"""A label key as the key of a map: the map's CEL rule (:func:`_label_map_field`) checks it."""
LabelValue = Annotated[
    str,
    _raise_problem(bounds.label_value_problem),
    Field(
        json_schema_extra={
            "maxLength": bounds.MAX_LABEL_VALUE_LENGTH,
            "pattern": bounds.LABEL_VALUE,
        }
    ),
]
"""A label value; the pattern is for the API server, the validator says what is wrong."""


def _cel_string(text: str) -> str:
    """``text`` as a CEL string literal (a regex's backslashes kept)."""
    return "'" + text.replace("\\", "\\\\").replace("'", "\\'") + "'"


def _label_key_rule(key: str) -> str:
    """The CEL test that the string ``key`` is a label key, as :func:`~heatshift.bounds.
    label_key_problem` checks it: the size first (cheap), then the pattern and part lengths."""
    return (
        f"size({key}) <= {bounds.MAX_LABEL_KEY_LENGTH}"
        f" && {key}.matches({_cel_string(bounds.LABEL_KEY)})"
        f" && {key}.matches({_cel_string(bounds.LABEL_KEY_LENGTHS)})"
    )


def _label_map_field(name: str, description: str, *, max_labels: int, **kwargs: Any) -> Any:
    """A ``dict[LabelKey, LabelValue]`` field: map keys have no pattern in a structural
    schema, so a CEL rule on the map checks them."""
    return Field(
        max_length=max_labels,
        json_schema_extra={
            "x-kubernetes-validations": [
                {
                    "rule": f"self.all(k, {_label_key_rule('k')})",
                    "message": f"{name} keys must be label keys ({bounds.LABEL_KEY_WORDS})",
                }
            ]
        },
        description=description,
        **kwargs,
    )


def _url_field(description: str) -> Any:
    return Field(
        json_schema_extra={"maxLength": bounds.MAX_URL_LENGTH, "pattern": bounds.HTTP_URL},
        description=description,
    )


URL = Annotated[str, _raise_problem(bounds.url_problem)]
MeteringTimeout = Annotated[float, AfterValidator(bounds.METERING_TIMEOUT.check)]


def _duration_bounds(cls: type[BaseModel]) -> list[tuple[str, bounds.DurationRange]]:
    """(YAML name, range) of every duration field of ``cls`` whose type names a range."""
    return [
        (field.alias or name, bound)
        for name, field in cls.model_fields.items()
        for bound in field.metadata
        if isinstance(bound, bounds.DurationRange)
    ]


def _config(*rules: tuple[str, str]) -> ConfigDict:
    """Model config for a resource schema node, carrying its CEL ``rules`` (rule, message).

    The node's duration fields add their range rules (from ``DurationRange.cel``) ahead of
    ``rules``, and their descriptions say the range.
    """

    def schema_extra(schema: dict[str, Any], cls: type[BaseModel]) -> None:
        ranged = _duration_bounds(cls)
        for name, bound in ranged:
            prop = schema["properties"][name]
            prop["description"] = f"{prop['description']} Must be {bound.words()}."
        found = [bound.cel(name) for name, bound in ranged] + list(rules)
        if found:
            schema["x-kubernetes-validations"] = [{"rule": r, "message": m} for r, m in found]

    return ConfigDict(
        frozen=True,
        extra="forbid",
        # JSON has no NaN or infinity; a YAML .nan or .inf is refused, not compared with.
        allow_inf_nan=False,
        json_schema_extra=schema_extra,
    )


class Schema(BaseModel):
    """Base of every resource schema node: frozen, unknown fields rejected, camelCase in YAML."""

    model_config = _config()

    @pydantic.field_validator("*")
    @classmethod
    def _duration_in_range(cls, value: Any, info: pydantic.ValidationInfo) -> Any:
        """A duration field within the range its type names, with its CEL rule's message."""
        field = cls.model_fields[info.field_name or ""]
        for bound in field.metadata:
            if isinstance(bound, bounds.DurationRange):
                _check_duration(bound, field.alias or info.field_name or "", value)
        return value

    def to_dict(self) -> dict[str, Any]:
        """The object as it reads in YAML and JSON: camelCase keys, unset fields left out."""
        return self.model_dump(mode="json", by_alias=True, exclude_none=True)


def _check_duration(bound: bounds.DurationRange, name: str, text: str) -> None:
    """Raise the CEL rule's message (and the value) unless ``text`` is within ``bound``.

    Parsed as Go (and so CEL) does: whole nanoseconds, and a value past Go's int64 limit is
    out of range (the API server fails the rule on it) rather than a huge number.
    """
    try:
        inside = bound.problem(durations.parse_duration(text)) is None
    except durations.DurationError:  # the pattern passed, so: past Go's int64 nanoseconds
        inside = False
    if not inside:
        shown = text if len(text) <= 40 else text[:37] + "..."
        raise ValueError(f"{bound.cel(name)[1]}, not {shown}")


def _seconds(text: str) -> float:
    return durations.parse_duration(text)


def _duration_field(default: str, description: str, alias: str | None = None) -> Any:
    """A Go duration string field; its type names the range (``Annotated[str, RANGE]``)."""
    return Field(
        default=default,
        alias=alias,
        max_length=64,
        pattern=DURATION_PATTERN,
        description=description,
    )


def _seconds_number(
    bound: bounds.DurationRange, default: float, description: str, *, alias: str
) -> Any:
    """A number-of-seconds field within ``bound`` (OpenAPI minimum and maximum); the type
    checks it with ``bound.check``."""
    low = "minimum" if bound.low_inclusive else "exclusiveMinimum"
    return Field(
        default=default,
        alias=alias,
        json_schema_extra={low: bound.low_s, "maximum": bound.high_s},
        description=f"{description} Must be {bound.words()}.",
    )


# --- shared shapes ---------------------------------------------------------------------------


class SelectorOperator(enum.StrEnum):
    """How a label selector requirement relates a key to its values."""

    IN = "In"
    NOT_IN = "NotIn"
    EXISTS = "Exists"
    DOES_NOT_EXIST = "DoesNotExist"


class LabelSelectorRequirement(Schema):
    """A label selector requirement: a key, an operator and (for In and NotIn) values."""

    model_config = _config(
        (
            "self.operator in ['In', 'NotIn'] ? (has(self.values) && size(self.values) > 0)"
            " : (!has(self.values) || size(self.values) == 0)",
            "values must be non-empty for In and NotIn, and empty for Exists and DoesNotExist",
        )
    )

    key: LabelKey = Field(
        json_schema_extra={
            "maxLength": bounds.MAX_LABEL_KEY_LENGTH,
            "pattern": bounds.LABEL_KEY,
            "x-kubernetes-validations": [
                {
                    "rule": f"self.matches({_cel_string(bounds.LABEL_KEY_LENGTHS)})",
                    "message": (
                        "key must have a prefix of at most 253 characters and a name of at most 63"
                    ),
                }
            ],
        },
        description="The label key the requirement applies to.",
    )
    operator: SelectorOperator = Field(
        description="In, NotIn, Exists or DoesNotExist: how the key relates to the values."
    )
    values: tuple[LabelValue, ...] = Field(
        default=(),
        max_length=256,
        description=(
            "Label values. Non-empty for In and NotIn; must be empty for Exists and DoesNotExist."
        ),
    )

    @model_validator(mode="after")
    def _values_match_operator(self) -> LabelSelectorRequirement:
        wants_values = self.operator in (SelectorOperator.IN, SelectorOperator.NOT_IN)
        if wants_values != bool(self.values):
            raise ValueError(
                "values must be non-empty for In and NotIn, and empty for Exists and DoesNotExist"
            )
        return self

    def matches(self, labels: Mapping[str, str]) -> bool:
        """True when ``labels`` satisfy this requirement (Kubernetes semantics)."""
        present = self.key in labels
        match self.operator:
            case SelectorOperator.IN:
                return present and labels[self.key] in self.values
            case SelectorOperator.NOT_IN:
                return not present or labels[self.key] not in self.values
            case SelectorOperator.EXISTS:
                return present
            case SelectorOperator.DOES_NOT_EXIST:
                return not present


class LabelSelector(Schema):
    """A Kubernetes label selector. Both parts are ANDed; an empty selector matches everything."""

    match_labels: dict[LabelKey, LabelValue] = _label_map_field(
        "matchLabels",
        "Labels that must all be present with exactly these values.",
        max_labels=64,
        alias="matchLabels",
        default_factory=dict,
    )
    match_expressions: tuple[LabelSelectorRequirement, ...] = Field(
        alias="matchExpressions",
        default=(),
        max_length=32,
        description="Requirements that must all hold.",
    )

    def matches(self, labels: Mapping[str, str]) -> bool:
        """True when ``labels`` satisfy every label and every expression of this selector."""
        return all(labels.get(k) == v for k, v in self.match_labels.items()) and all(
            e.matches(labels) for e in self.match_expressions
        )


class ConditionStatus(enum.StrEnum):
    """Whether a condition holds."""

    TRUE = "True"
    FALSE = "False"
    UNKNOWN = "Unknown"


class Condition(Schema):
    """One aspect of the object's state, in the standard Kubernetes condition shape."""

    type: str = Field(
        max_length=316,
        pattern=(
            r"^([a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*/)?"
            r"(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])$"
        ),
        description="Condition type in CamelCase, e.g. Ready or MeteringFresh.",
    )
    status: ConditionStatus = Field(description="True, False or Unknown.")
    reason: str = Field(
        min_length=1,
        max_length=1024,
        pattern=r"^[A-Za-z]([A-Za-z0-9_,:]*[A-Za-z0-9_])?$",
        description="Machine-readable CamelCase reason for the last transition.",
    )
    message: str = Field(
        default="", max_length=32768, description="Human-readable details of the last transition."
    )
    last_transition_time: datetime.datetime = Field(
        alias="lastTransitionTime", description="When the condition last changed status (RFC 3339)."
    )
    observed_generation: int | None = Field(
        alias="observedGeneration",
        default=None,
        ge=0,
        description="The .metadata.generation the condition was computed from.",
    )


def _conditions_field() -> Any:
    return Field(
        default=(),
        max_length=16,
        json_schema_extra={
            "x-kubernetes-list-type": "map",
            "x-kubernetes-list-map-keys": ["type"],
        },
        description="Standard conditions, at most one per type.",
    )


# --- LeafSite ----------------------------------------------------------------------------------


class CapacityOverride(Schema):
    """Compute capacity of the site, for the dimensions given; the rest come from its nodes."""

    model_config = _config(
        (
            "has(self.cpu) || has(self.memoryGiB) || has(self.gpu)",
            "a capacity override must set at least one of cpu, memoryGiB and gpu",
        )
    )

    cpu: float | None = Field(
        default=None, ge=0, le=bounds.MAX_CPU_CORES, description="CPU cores available to jobs."
    )
    memory_gib: float | None = Field(
        default=None,
        ge=0,
        le=bounds.MAX_MEMORY_GIB,
        alias="memoryGiB",
        description="Memory available to jobs, GiB.",
    )
    gpu: int | None = Field(
        default=None, ge=0, le=bounds.MAX_GPUS, description="Whole GPUs available to jobs."
    )

    @model_validator(mode="after")
    def _not_empty(self) -> CapacityOverride:
        if self.cpu is None and self.memory_gib is None and self.gpu is None:
            raise ValueError("a capacity override must set at least one of cpu, memoryGiB and gpu")
        return self

    def applied_to(self, allocatable: model.Resources) -> model.Resources:
        """``allocatable`` with every dimension this override sets replaced."""
        return model.Resources(
            cpu=allocatable.cpu if self.cpu is None else self.cpu,
            memory_gib=allocatable.memory_gib if self.memory_gib is None else self.memory_gib,
            gpu=allocatable.gpu if self.gpu is None else self.gpu,
        )


class PowerSpec(Schema):
    """The site's electrical power model; jobs with a heatshift.dev/power-watts hint use that."""

    model_config = _config(
        (
            "self.wattsPerGPU > 0.0 || self.wattsPerCPU > 0.0",
            "at least one of wattsPerGPU and wattsPerCPU must be positive",
        )
    )

    idle_watts: float = Field(
        alias="idleWatts",
        default=0.0,
        ge=0,
        le=bounds.MAX_SITE_POWER_WATTS,
        description="Power the site draws with no jobs running, W.",
    )
    watts_per_gpu: float = Field(
        default=0.0,
        ge=0,
        le=bounds.MAX_SITE_POWER_WATTS,
        alias="wattsPerGPU",
        description="Extra power per busy GPU, W.",
    )
    watts_per_cpu: float = Field(
        default=0.0,
        ge=0,
        le=bounds.MAX_SITE_POWER_WATTS,
        alias="wattsPerCPU",
        description="Extra power per busy CPU core, W.",
    )

    @model_validator(mode="after")
    def _some_job_power(self) -> PowerSpec:
        if self.watts_per_gpu <= 0 and self.watts_per_cpu <= 0:
            raise ValueError("at least one of wattsPerGPU and wattsPerCPU must be positive")
        return self


class TankSpec(Schema):
    """The buffer tank between the heat exchanger and the building."""

    capacity_kwh: float = Field(
        ge=0,
        le=bounds.MAX_TANK_CAPACITY_KWH,
        alias="capacityKWh",
        description="Usable thermal storage, kWh. 0 means no tank: heat not taken now is dumped.",
    )
    loss_per_hour: float = Field(
        alias="lossPerHour",
        default=0.01,
        ge=0,
        lt=1,
        description="Fraction of the stored energy lost per hour (standing loss), 0 <= x < 1.",
    )


class BackupSpec(Schema):
    """What the offtaker burns for heat this site does not give it: what the heat displaces."""

    kind: model.BackupKind = Field(
        default=model.BackupKind.GAS,
        description="The backup heat source: gas, oil, electric or district.",
    )
    efficiency: float | None = Field(
        default=None,
        gt=0,
        le=bounds.MAX_BACKUP_EFFICIENCY,
        description="Heat out per kWh of fuel in (a heat pump: its COP). Default by kind: gas "
        "0.90, oil 0.85, electric 1.0, district 1.0.",
    )
    emission_factor_kg_per_kwh: float | None = Field(
        default=None,
        ge=0,
        le=bounds.MAX_EMISSION_FACTOR_KG_PER_KWH,
        alias="emissionFactorKgPerKWh",
        description="kg CO2 per kWh of fuel. Default by kind: gas 0.202, oil 0.267, electric "
        "0.250, district 0.150.",
    )

    @property
    def effective_efficiency(self) -> float:
        """The efficiency given, else the kind's default."""
        if self.efficiency is not None:
            return self.efficiency
        return model.BACKUP_EFFICIENCY[self.kind]

    @property
    def effective_emission_factor(self) -> float:
        """The emission factor given, else the kind's default, kg CO2 per kWh of fuel."""
        if self.emission_factor_kg_per_kwh is not None:
            return self.emission_factor_kg_per_kwh
        return model.EMISSION_FACTOR_KG_PER_KWH[self.kind]


class OfftakerSpec(Schema):
    """The building, or heating loop, that takes the heat."""

    kind: model.OfftakerKind = Field(
        description="What takes the heat: pool, residential, greenhouse, districtHeating or office."
    )
    max_thermal_kw: float = Field(
        gt=0,
        le=bounds.MAX_THERMAL_KW,
        alias="maxThermalKW",
        description="Most heat the offtaker can take at once (heat-exchanger limit), kW.",
    )
    backup: BackupSpec | None = Field(
        default=None,
        description="The offtaker's backup heat source, for fuel and CO2 avoided. Default: gas.",
    )
    min_supply_temp_c: float | None = Field(
        default=None,
        ge=bounds.MIN_TEMPERATURE_C,
        le=bounds.MAX_TEMPERATURE_C,
        alias="minSupplyTempC",
        description="Contracted minimum supply temperature, °C; the ledger counts the hours "
        "below it.",
    )

    @property
    def effective_backup(self) -> BackupSpec:
        """The backup given, else gas with its defaults."""
        return self.backup if self.backup is not None else BackupSpec()


class LedgerPeriodKind(enum.StrEnum):
    """How long one ledger period lasts; periods start at UTC midnight, Monday, the 1st."""

    DAY = "day"
    WEEK = "week"
    MONTH = "month"


class LedgerSpec(Schema):
    """How the site's heat ledger is kept."""

    period: LedgerPeriodKind = Field(
        default=LedgerPeriodKind.MONTH,
        description="Billing period of the ledger: day, week or month (UTC).",
    )
    pue: float = Field(
        default=1.0,
        ge=1,
        le=bounds.MAX_PUE,
        description="Power usage effectiveness of the site, total facility energy over IT "
        "energy; the ledger takes total facility energy as IT energy x pue for ERE.",
    )


class SecretKeyRef(Schema):
    """A key in a Secret (the resource is cluster-scoped, so the namespace is required)."""

    name: str = Field(
        min_length=1, max_length=253, pattern=DNS_SUBDOMAIN, description="Name of the Secret."
    )
    namespace: str = Field(
        min_length=1, max_length=63, pattern=DNS_LABEL, description="Namespace of the Secret."
    )
    key: str = Field(
        default="token",
        min_length=1,
        max_length=253,
        pattern=r"^[-._a-zA-Z0-9]+$",
        description="Key in the Secret's data holding the bearer token.",
    )


class HTTPMetering(Schema):
    """Readings from a heatshift metering API (the reference contract the simulator serves)."""

    model_config = _config(
        (
            "!self.insecureSkipTLSVerify || self.url.startsWith('https://')",
            "insecureSkipTLSVerify applies to https:// URLs only",
        )
    )

    url: URL = _url_field(
        "Base URL of the metering API, e.g. https://metering.example.net/v1.",
    )
    site_id: str = Field(
        min_length=1,
        max_length=253,
        alias="siteId",
        description="The site's identifier in the metering API (often not the LeafSite name).",
    )
    token_secret_ref: SecretKeyRef | None = Field(
        alias="tokenSecretRef",
        default=None,
        description="Secret key holding a bearer token; omit when the API needs none.",
    )
    timeout_seconds: MeteringTimeout = _seconds_number(
        bounds.METERING_TIMEOUT,
        5.0,
        "Timeout of one whole request, seconds.",
        alias="timeoutSeconds",
    )
    insecure_skip_tls_verify: bool = Field(
        default=False,
        alias="insecureSkipTLSVerify",
        description="Skip TLS certificate verification. For tests only.",
    )

    @model_validator(mode="after")
    def _tls_skip_needs_https(self) -> HTTPMetering:
        if self.insecure_skip_tls_verify and not self.url.startswith("https://"):
            raise ValueError("insecureSkipTLSVerify applies to https:// URLs only")
        return self


_PROMQL = Field(min_length=1, max_length=4096)


class PrometheusQueries(Schema):
    """PromQL instant queries, each returning a single sample for this site."""

    demand_kw: Annotated[str, _PROMQL] = Field(
        alias="demandKW", description="PromQL: the offtaker's heat demand now, kW."
    )
    tank_energy_kwh: Annotated[str, _PROMQL] = Field(
        alias="tankEnergyKWh", description="PromQL: the energy stored in the tank now, kWh."
    )
    tank_capacity_kwh: Annotated[str, _PROMQL] | None = Field(
        default=None,
        alias="tankCapacityKWh",
        description="PromQL: the tank's usable capacity, kWh. Default: spec.tank.capacityKWh.",
    )
    supply_temp_c: Annotated[str, _PROMQL] | None = Field(
        default=None, alias="supplyTempC", description="PromQL: supply temperature, °C."
    )
    return_temp_c: Annotated[str, _PROMQL] | None = Field(
        default=None, alias="returnTempC", description="PromQL: return temperature, °C."
    )
    heat_delivered_kwh: Annotated[str, _PROMQL] | None = Field(
        default=None,
        alias="heatDeliveredKWh",
        description="PromQL: the meter's cumulative delivered heat register, kWh. Without it "
        "the ledger estimates the heat delivered.",
    )
    it_energy_kwh: Annotated[str, _PROMQL] | None = Field(
        default=None,
        alias="itEnergyKWh",
        description="PromQL: the cumulative IT energy register, kWh (with heatDeliveredKWh).",
    )
    heat_dumped_kwh: Annotated[str, _PROMQL] | None = Field(
        default=None,
        alias="heatDumpedKWh",
        description="PromQL: the cumulative dumped heat register, kWh (with heatDeliveredKWh).",
    )
    flow_m3_per_h: Annotated[str, _PROMQL] | None = Field(
        default=None, alias="flowM3PerH", description="PromQL: flow through the meter, m³/h."
    )


class PrometheusMetering(Schema):
    """Readings from a Prometheus server that scrapes the building's meters."""

    url: URL = _url_field(
        "Base URL of the Prometheus HTTP API, e.g. http://prometheus.monitoring:9090.",
    )
    queries: PrometheusQueries = Field(description="The PromQL queries for this site.")
    timeout_seconds: MeteringTimeout = _seconds_number(
        bounds.METERING_TIMEOUT,
        5.0,
        "Timeout of one whole query, seconds.",
        alias="timeoutSeconds",
    )


class MeteringSpec(Schema):
    """Where the site's heat demand and tank state come from: exactly one source."""

    model_config = _config(
        (
            "has(self.http) != has(self.prometheus)",
            "exactly one metering source (http or prometheus) must be set",
        )
    )

    http: HTTPMetering | None = Field(default=None, description="A heatshift metering API.")
    prometheus: PrometheusMetering | None = Field(default=None, description="A Prometheus server.")

    @model_validator(mode="after")
    def _exactly_one(self) -> MeteringSpec:
        if (self.http is None) == (self.prometheus is None):
            raise ValueError("exactly one metering source (http or prometheus) must be set")
        return self


class LeafSiteSpec(Schema):
    """A leaf site: a micro data centre, the building it heats and where its readings come from."""

    node_selector: dict[LabelKey, LabelValue] = _label_map_field(
        "nodeSelector",
        "Labels selecting this site's nodes; released jobs get it as nodeSelector.",
        max_labels=64,
        alias="nodeSelector",
        min_length=1,
    )
    capacity: CapacityOverride | None = Field(
        default=None,
        description="Capacity override; dimensions not given are summed from node allocatable.",
    )
    power: PowerSpec = Field(description="Power model: how much a job draws here.")
    heat_recovery_efficiency: float = Field(
        alias="heatRecoveryEfficiency",
        default=0.85,
        gt=0,
        le=1,
        description="Fraction of IT power recovered as useful heat, 0 < x <= 1.",
    )
    tank: TankSpec = Field(description="The buffer tank.")
    offtaker: OfftakerSpec = Field(description="Who takes the heat.")
    metering: MeteringSpec = Field(description="Source of heat demand and tank state.")
    ledger: LedgerSpec | None = Field(
        default=None,
        description="How the heat ledger is kept; default: monthly, pue 1.",
    )
    staleness_limit: Annotated[str, bounds.STALENESS_LIMIT] = _duration_field(
        "10m",
        "Readings older than this make the site heat-unaware (its heat is worth 0) until "
        "fresh ones arrive. Go duration, e.g. 10m.",
        alias="stalenessLimit",
    )

    @property
    def staleness_limit_s(self) -> float:
        """The staleness limit in seconds."""
        return _seconds(self.staleness_limit)

    def to_site(self, name: str, capacity: model.Resources) -> model.Site:
        """The domain :class:`~heatshift.model.Site` named ``name``.

        ``capacity`` is the sum of the site's node allocatable; the spec's capacity override,
        where given, replaces it dimension by dimension.
        """
        try:
            return model.Site(
                name=name,
                capacity=self.capacity.applied_to(capacity) if self.capacity else capacity,
                power=model.PowerModel(
                    idle_watts=self.power.idle_watts,
                    watts_per_gpu=self.power.watts_per_gpu,
                    watts_per_cpu=self.power.watts_per_cpu,
                ),
                heat_recovery_efficiency=self.heat_recovery_efficiency,
                tank=model.Tank(
                    capacity_kwh=self.tank.capacity_kwh, loss_per_hour=self.tank.loss_per_hour
                ),
                offtaker=model.Offtaker(
                    kind=self.offtaker.kind, max_thermal_kw=self.offtaker.max_thermal_kw
                ),
            )
        except pydantic.ValidationError as err:
            raise ResourceError(f"LeafSite {name!r}: {err}") from err


class LedgerSource(enum.StrEnum):
    """Where a ledger figure comes from."""

    METERED = "metered"
    ESTIMATED = "estimated"
    MIXED = "mixed"
    NONE = "none"


class LedgerQuantity(Schema):
    """One energy of a ledger period: metered from register deltas, estimated where the
    meter has no register for it, and the sum."""

    kwh: float = Field(default=0.0, ge=0, description="Metered plus estimated energy, kWh.")
    metered_kwh: float = Field(
        default=0.0,
        ge=0,
        alias="meteredKWh",
        description="From register deltas: carriedKWh + (register now - registerStartKWh), kWh.",
    )
    estimated_kwh: float = Field(
        default=0.0,
        ge=0,
        alias="estimatedKWh",
        description="Estimated by heatshift while the meter had no register for it, kWh.",
    )
    source: LedgerSource = Field(
        default=LedgerSource.NONE,
        description="metered, estimated, mixed (some of each) or none (nothing counted yet).",
    )
    register_start_kwh: float | None = Field(
        default=None,
        ge=0,
        le=bounds.MAX_REGISTER_KWH,
        alias="registerStartKWh",
        description="Register value where the current metered stretch began: the period's "
        "start, or the last counter reset or meter replacement, kWh.",
    )
    carried_kwh: float = Field(
        default=0.0,
        ge=0,
        alias="carriedKWh",
        description="Metered in earlier stretches of this period (before a reset or a meter "
        "replacement), kWh.",
    )


class LedgerPeriod(Schema):
    """The heat ledger of one billing period."""

    start: datetime.datetime = Field(description="Start of the period (RFC 3339, UTC).")
    end: datetime.datetime = Field(description="End of the period (RFC 3339, UTC).")
    it_energy: LedgerQuantity = Field(
        default_factory=LedgerQuantity, alias="itEnergy", description="IT energy drawn."
    )
    heat_delivered: LedgerQuantity = Field(
        default_factory=LedgerQuantity,
        alias="heatDelivered",
        description="Heat delivered to the offtaker (reused energy).",
    )
    heat_dumped: LedgerQuantity = Field(
        default_factory=LedgerQuantity,
        alias="heatDumped",
        description="Heat dumped through the dry cooler.",
    )
    hours_dumped_while_wanted: float = Field(
        default=0.0,
        ge=0,
        alias="hoursDumpedWhileWanted",
        description="Hours in which heat was dumped while the offtaker wanted heat.",
    )
    hours_below_min_supply_temp: float | None = Field(
        default=None,
        ge=0,
        alias="hoursBelowMinSupplyTemp",
        description="Hours the supply temperature was below the contracted minimum (only "
        "with offtaker.minSupplyTempC).",
    )
    ere: float | None = Field(
        default=None,
        description="Energy Reuse Effectiveness: (IT energy x pue - heat delivered) / IT "
        "energy; absent while no IT energy is counted.",
    )
    fuel_avoided_kwh: float = Field(
        default=0.0,
        ge=0,
        alias="fuelAvoidedKWh",
        description="Fuel the backup did not burn: heat delivered / backup efficiency, kWh.",
    )
    co2_avoided_kg: float = Field(
        default=0.0,
        ge=0,
        alias="co2AvoidedKg",
        description="CO2 the backup did not emit: fuel avoided x emission factor, kg.",
    )
    meter_id: str | None = Field(
        default=None,
        max_length=253,
        alias="meterId",
        description="The meter whose registers the period's metered figures come from.",
    )


class MeterRegisters(Schema):
    """The last register values the ledger accepted from the site's meter."""

    meter_id: str | None = Field(
        default=None, max_length=253, alias="meterId", description="The meter's identity."
    )
    observed_at: datetime.datetime = Field(
        alias="observedAt", description="When the registers were read (RFC 3339)."
    )
    it_energy_kwh: float | None = Field(
        default=None,
        ge=0,
        le=bounds.MAX_REGISTER_KWH,
        alias="itEnergyKWh",
        description="IT energy register, kWh.",
    )
    heat_delivered_kwh: float | None = Field(
        default=None,
        ge=0,
        le=bounds.MAX_REGISTER_KWH,
        alias="heatDeliveredKWh",
        description="Delivered heat register, kWh.",
    )
    heat_dumped_kwh: float | None = Field(
        default=None,
        ge=0,
        le=bounds.MAX_REGISTER_KWH,
        alias="heatDumpedKWh",
        description="Dumped heat register, kWh.",
    )


class LedgerStatus(Schema):
    """The site's heat ledger: this period and the last, and the registers it counts from.
    Rebuilt from these values and the meter's registers after a restart."""

    period: LedgerPeriodKind = Field(description="Length of a period: day, week or month.")
    updated_at: datetime.datetime = Field(
        alias="updatedAt", description="When the ledger was last brought up to date."
    )
    meter: MeterRegisters | None = Field(
        default=None, description="The last accepted meter registers; absent without any."
    )
    current: LedgerPeriod = Field(description="The period now running.")
    previous: LedgerPeriod | None = Field(default=None, description="The period before it.")


class LeafSiteStatus(Schema):
    """What the operator last observed at the site. Written by the operator only."""

    demand_kw: float | None = Field(
        default=None, ge=0, alias="demandKW", description="Offtaker heat demand, kW."
    )
    tank_energy_kwh: float | None = Field(
        default=None, ge=0, alias="tankEnergyKWh", description="Energy stored in the tank, kWh."
    )
    tank_percent: float | None = Field(
        alias="tankPercent",
        default=None,
        ge=0,
        le=100,
        description="Tank state of charge, percent of capacity.",
    )
    it_load_kw: float | None = Field(
        default=None, ge=0, alias="itLoadKW", description="Electrical IT load of the site, kW."
    )
    heat_delivered_kwh: float | None = Field(
        default=None,
        ge=0,
        alias="heatDeliveredKWh",
        description="Heat delivered to the offtaker this ledger period (ledger.current), kWh.",
    )
    heat_dumped_kwh: float | None = Field(
        default=None,
        ge=0,
        alias="heatDumpedKWh",
        description="Heat dumped through the dry cooler this ledger period, kWh.",
    )
    metering_observed_at: datetime.datetime | None = Field(
        alias="meteringObservedAt",
        default=None,
        description="When the last valid metering reading was taken (RFC 3339).",
    )
    metering_age_seconds: float | None = Field(
        alias="meteringAgeSeconds",
        default=None,
        ge=0,
        description="Age of the last valid reading when status was written, s.",
    )
    heat_aware: bool | None = Field(
        alias="heatAware",
        default=None,
        description="True while readings are valid and fresh; when false the site's heat is "
        "worth 0 and jobs are placed as a heat-unaware scheduler would.",
    )
    supply_temp_c: float | None = Field(
        default=None,
        ge=bounds.MIN_TEMPERATURE_C,
        le=bounds.MAX_TEMPERATURE_C,
        alias="supplyTempC",
        description="Supply temperature of the last valid reading, °C.",
    )
    return_temp_c: float | None = Field(
        default=None,
        ge=bounds.MIN_TEMPERATURE_C,
        le=bounds.MAX_TEMPERATURE_C,
        alias="returnTempC",
        description="Return temperature of the last valid reading, °C.",
    )
    ledger: LedgerStatus | None = Field(
        default=None, description="The heat ledger: metered and estimated energy per period."
    )
    conditions: tuple[Condition, ...] = _conditions_field()


# --- HeatPolicy --------------------------------------------------------------------------------


class SLAClass(Schema):
    """A service class: how long a held job of this class may wait, and its priority."""

    name: str = Field(
        min_length=1,
        max_length=63,
        pattern=DNS_LABEL,
        description="Class name; jobs choose it with the heatshift.dev/sla-class label.",
    )
    max_delay: Annotated[str, bounds.MAX_DELAY] = Field(
        alias="maxDelay",
        max_length=64,
        pattern=DURATION_PATTERN,
        description="Longest a job may be held past submission (Go duration, e.g. 6h). A job's "
        "own heatshift.dev/deadline or heatshift.dev/max-delay hint overrides it.",
    )
    priority: int = Field(
        default=1,
        ge=0,
        le=10,
        description="0-10; when waiting costs, higher-priority jobs start sooner.",
    )

    @property
    def max_delay_s(self) -> float:
        """The maximum delay in seconds."""
        return _seconds(self.max_delay)


class ObjectiveWeights(Schema):
    """What the planner optimises: value of useful heat against dumped heat and waiting."""

    model_config = _config(
        (
            "self.usefulHeatWeight + self.dumpedHeatWeight + self.delayWeight > 0.0",
            "at least one objective weight must be positive",
        )
    )

    useful_heat_weight: float = Field(
        alias="usefulHeatWeight",
        default=1000.0,
        ge=0,
        le=bounds.MAX_OBJECTIVE_WEIGHT,
        description="Value of one kWh of heat delivered to an offtaker.",
    )
    dumped_heat_weight: float = Field(
        alias="dumpedHeatWeight",
        default=10.0,
        ge=0,
        le=bounds.MAX_OBJECTIVE_WEIGHT,
        description="Cost of one kWh of heat dumped (or lost from a tank).",
    )
    delay_weight: float = Field(
        alias="delayWeight",
        default=1.0,
        ge=0,
        le=bounds.MAX_OBJECTIVE_WEIGHT,
        description="Cost of one job-hour of waiting, times (priority + 1).",
    )

    @model_validator(mode="after")
    def _some_weight(self) -> ObjectiveWeights:
        if self.useful_heat_weight + self.dumped_heat_weight + self.delay_weight <= 0:
            raise ValueError("at least one objective weight must be positive")
        return self


class PlanningSpec(Schema):
    """The planner's time grid and limits (Go durations)."""

    model_config = _config(
        ("duration(self.horizon) > duration(self.step)", "horizon must be longer than step"),
        (
            "duration(self.replanInterval) <= duration(self.horizon)",
            "replanInterval must not be longer than horizon",
        ),
        (
            "duration(self.solverTimeLimit) < duration(self.replanInterval)",
            "solverTimeLimit must be shorter than replanInterval",
        ),
    )

    horizon: Annotated[str, bounds.PLANNING_HORIZON] = _duration_field(
        "24h", "How far ahead the planner looks, e.g. 24h."
    )
    step: Annotated[str, bounds.PLANNING_STEP] = _duration_field(
        "15m", "Length of a planning slot near now, e.g. 15m."
    )
    replan_interval: Annotated[str, bounds.REPLAN_INTERVAL] = _duration_field(
        "5m", "How often a new plan is made, e.g. 5m.", alias="replanInterval"
    )
    solver_time_limit: Annotated[str, bounds.SOLVER_TIME_LIMIT] = _duration_field(
        "2s",
        "Wall-clock limit of one solve; past it the best plan found is used.",
        alias="solverTimeLimit",
    )

    @model_validator(mode="after")
    def _consistent(self) -> PlanningSpec:
        horizon, step = _seconds(self.horizon), _seconds(self.step)
        replan, limit = _seconds(self.replan_interval), _seconds(self.solver_time_limit)
        # The ranges are checked per field (and this runs only when they hold).
        if horizon <= step:
            raise ValueError("horizon must be longer than step")
        if replan > horizon:
            raise ValueError("replanInterval must not be longer than horizon")
        if limit >= replan:
            raise ValueError("solverTimeLimit must be shorter than replanInterval")
        return self


DEFAULT_SLA_CLASSES = (SLAClass(name="standard", maxDelay="6h", priority=1),)


class HeatPolicySpec(Schema):
    """Which workloads heatshift holds, how long they may wait, and how it plans."""

    model_config = _config(
        (
            "self.slaClasses.exists(c, c.name == self.defaultSLAClass)",
            "defaultSLAClass must name one of slaClasses",
        )
    )

    namespace_selector: LabelSelector = Field(
        alias="namespaceSelector",
        description="Namespaces whose workloads this policy manages; {} selects every namespace.",
    )
    selector: LabelSelector = Field(
        description="Labels of the Jobs (and bare Pods) this policy holds; {} selects all of them "
        "in the selected namespaces."
    )
    sites: tuple[Annotated[str, Field(max_length=253, pattern=DNS_SUBDOMAIN)], ...] = Field(
        default=(),
        max_length=256,
        json_schema_extra={"x-kubernetes-list-type": "set"},
        description="LeafSites this policy may place jobs at; empty means all of them.",
    )
    sla_classes: tuple[SLAClass, ...] = Field(
        default=DEFAULT_SLA_CLASSES,
        min_length=1,
        max_length=32,
        alias="slaClasses",
        json_schema_extra={
            "x-kubernetes-list-type": "map",
            "x-kubernetes-list-map-keys": ["name"],
            "x-kubernetes-validations": [
                {
                    "rule": "self.all(c, self.exists_one(d, d.name == c.name))",
                    "message": "SLA class names must be unique",
                }
            ],
        },
        description="Service classes; a job picks one with the heatshift.dev/sla-class label.",
    )
    default_sla_class: str = Field(
        default="standard",
        max_length=63,
        alias="defaultSLAClass",
        description="Class of a job that names none (or an unknown one); must be in slaClasses.",
    )
    objective: ObjectiveWeights = Field(
        default=ObjectiveWeights(), description="Objective weights."
    )
    planning: PlanningSpec = Field(
        default=PlanningSpec(), description="Planning horizon, grid and limits."
    )
    hold_bare_pods: bool = Field(
        alias="holdBarePods",
        default=False,
        description="Also hold selected bare Pods (with the heatshift.dev/placement scheduling "
        "gate). Jobs are always held through spec.suspend.",
    )

    @model_validator(mode="after")
    def _classes_consistent(self) -> HeatPolicySpec:
        names = [c.name for c in self.sla_classes]
        if len(set(names)) != len(names):
            raise ValueError("SLA class names must be unique")
        if self.default_sla_class not in names:
            raise ValueError("defaultSLAClass must name one of slaClasses")
        return self

    def sla_class(self, name: str | None) -> SLAClass:
        """The class called ``name``; the default class when ``name`` is None or unknown."""
        for c in self.sla_classes:
            if c.name == name:
                return c
        for c in self.sla_classes:
            if c.name == self.default_sla_class:
                return c
        raise AssertionError("validated: defaultSLAClass is in slaClasses")  # pragma: no cover

    @property
    def replan_interval_s(self) -> float:
        """How often to re-plan, seconds."""
        return _seconds(self.planning.replan_interval)

    def planner_config(self, base: config.PlannerConfig | None = None) -> config.PlannerConfig:
        """The planner settings this policy asks for.

        Fields the policy does not set (workers, seed, grid coarsening, ...) come from ``base``,
        else from :class:`~heatshift.planner.config.PlannerConfig`'s defaults.
        """
        settings = (base or config.PlannerConfig()).model_dump()
        settings.update(
            horizon_s=_seconds(self.planning.horizon),
            step_s=_seconds(self.planning.step),
            time_limit_s=_seconds(self.planning.solver_time_limit),
            useful_heat_weight=self.objective.useful_heat_weight,
            dumped_heat_weight=self.objective.dumped_heat_weight,
            delay_weight=self.objective.delay_weight,
        )
        return config.PlannerConfig.model_validate(settings)


class HeatPolicyStatus(Schema):
    """The outcome of the policy's last planning cycle. Written by the operator only."""

    held: int | None = Field(default=None, ge=0, description="Workloads held now.")
    released: int | None = Field(
        default=None, ge=0, description="Workloads released since the policy was created."
    )
    deadline_forced_releases: int | None = Field(
        alias="deadlineForcedReleases",
        default=None,
        ge=0,
        description="Releases forced by a deadline rather than chosen for heat.",
    )
    kueue_waiting: int | None = Field(
        alias="kueueWaiting",
        default=None,
        ge=0,
        description="Kueue Workloads of this policy that heatshift's admission check holds for "
        "heat (Retry) as of its last round; absent when the operator does not run --kueue.",
    )
    expected_useful_heat_kwh: float | None = Field(
        default=None,
        ge=0,
        alias="expectedUsefulHeatKWh",
        description="Useful heat the current plan expects to deliver over its horizon, kWh.",
    )
    last_plan_time: datetime.datetime | None = Field(
        alias="lastPlanTime", default=None, description="When the last plan was made (RFC 3339)."
    )
    solver_status: model.SolveStatus | None = Field(
        alias="solverStatus",
        default=None,
        description="How the last plan came about: optimal, feasible (the solver's work budget "
        "used up), timedOut (stopped by its wall-clock limit first, so the plan may not repeat), "
        "fallback (greedy plan), heuristic (list schedule without the solver: too many jobs "
        "for its budget) or empty.",
    )
    solver_seconds: float | None = Field(
        alias="solverSeconds",
        default=None,
        ge=0,
        description="Wall-clock time of the last solve, seconds.",
    )
    conditions: tuple[Condition, ...] = _conditions_field()


# --- whole objects -----------------------------------------------------------------------------


class ObjectMeta(BaseModel):
    """The part of ``metadata`` heatshift reads; server-set fields are ignored."""

    model_config = ConfigDict(frozen=True, extra="ignore")

    name: str = Field(min_length=1, max_length=253, pattern=DNS_SUBDOMAIN)
    labels: dict[str, str] = Field(default_factory=dict)
    annotations: dict[str, str] = Field(default_factory=dict)
    generation: int | None = None


class LeafSite(Schema):
    """A LeafSite: a micro data centre in a building that wants its heat."""

    api_version: Literal["heatshift.dev/v1alpha1"] = Field(alias="apiVersion")
    kind: Literal["LeafSite"]
    metadata: ObjectMeta
    spec: LeafSiteSpec
    status: LeafSiteStatus | None = None

    def to_site(self, capacity: model.Resources) -> model.Site:
        """The domain site, given the summed allocatable of its nodes."""
        return self.spec.to_site(self.metadata.name, capacity)


class HeatPolicy(Schema):
    """A HeatPolicy: which workloads are held for heat-aware placement, and on what terms."""

    api_version: Literal["heatshift.dev/v1alpha1"] = Field(alias="apiVersion")
    kind: Literal["HeatPolicy"]
    metadata: ObjectMeta
    spec: HeatPolicySpec
    status: HeatPolicyStatus | None = None


Resource = LeafSite | HeatPolicy

_KINDS: dict[str, type[LeafSite] | type[HeatPolicy]] = {
    "LeafSite": LeafSite,
    "HeatPolicy": HeatPolicy,
}


def parse_resource(document: Mapping[str, Any]) -> Resource:
    """A LeafSite or HeatPolicy from a parsed YAML/JSON document.

    Raises :class:`ResourceError` for another kind or API version, or an invalid object.
    """
    kind = document.get("kind")
    cls = _KINDS.get(kind) if isinstance(kind, str) else None
    if cls is None or document.get("apiVersion") != GROUP_VERSION:
        raise ResourceError(
            f"not a heatshift resource: apiVersion={document.get('apiVersion')!r} kind={kind!r}"
        )
    try:
        return cls.model_validate(document)
    except pydantic.ValidationError as err:
        meta = document.get("metadata")
        name = meta.get("name", "?") if isinstance(meta, Mapping) else "?"
        raise ResourceError(f"invalid {kind} {name!r}: {err}") from err
