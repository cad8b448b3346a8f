"""Scenario files: their format, their loader, and where the built-in scenario lives.

Owns the YAML format of ``kind: Scenario`` (``heatshift.dev/v1alpha1``): pydantic models of the
file exactly as people write it (camelCase, unknown fields rejected), the CSV formats it refers
to (offtaker demand series and the job trace), and :func:`load_scenario`, which validates all of
it at this edge and returns a :class:`Scenario` in domain terms (:mod:`heatshift.model`). The
built-in scenario (``scenarios/winter-week/``) ships as package data; see its README.

Callers: ``heatshift simulate`` (the CLI), the simulator (:mod:`heatshift.sim.engine`), the
reference metering API server and the benchmarks. Nothing here simulates: demand is returned as
the building's true demand, not capped at the offtaker's rating (capping is physics, done by
the simulator with :func:`heatshift.thermal.capped_demand_kw`).

Every problem in a scenario raises one :class:`ScenarioError` whose message names the file, the
field (``spec.sites[2].tank.initialKWh``, or ``jobs.csv line 14, column gpu``) and what was
expected, one problem a line.

The job trace (CSV) has the header ``id,submit_s,duration_s,cpu,memory_gib,gpu,power_watts,
max_delay_s,sites,priority``; the last four may be empty: no ``power_watts`` means the site's
power model, no ``max_delay_s`` means ``spec.defaultMaxDelay``, no ``sites`` means any site
(else a ``;``-separated allow-list), no ``priority`` means 1. A job must start no later than
``submit_s + max_delay_s``. A job that fits no site is not an error of the file: the simulator
counts it as unschedulable. Jobs are kept even when submitted after the scenario's end.

A demand CSV has a time column (seconds from the scenario start) and a kW column; each value
holds until the next row's time, and the first value also holds before the first row.
"""

from __future__ import annotations

import csv
import difflib
import importlib.resources
import math
import re
import types
import typing
from collections.abc import Hashable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, Literal

import pydantic
import yaml
from pydantic import BaseModel, ConfigDict, Field

from heatshift import bounds, durations, model

API_VERSION = "heatshift.dev/v1alpha1"
KIND = "Scenario"
BUILTIN_SCENARIO = "winter-week"
"""The name of the built-in scenario (a directory under ``heatshift/sim/scenarios/``)."""
DEFAULT_MAX_DELAY = "12h"
"""``spec.defaultMaxDelay`` when the file does not give one."""
JOB_COLUMNS = (
    "id",
    "submit_s",
    "duration_s",
    "cpu",
    "memory_gib",
    "gpu",
    "power_watts",
    "max_delay_s",
    "sites",
    "priority",
)
"""The header of a jobs CSV (any order); the last four columns may be left empty per row."""
MAX_REPORTED_PROBLEMS = 20
"""A :class:`ScenarioError` lists at most this many problems, then says how many more."""

_SUBMIT_TIME = bounds.DurationRange("a submit time", 0.0, bounds.SIMULATION_SPAN.high_s)
_DEMAND_TIME = bounds.DurationRange("a time from the start", 0.0, bounds.SIMULATION_SPAN.high_s)
_DNS_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$")
_DURATION_EXAMPLES = "a duration such as 90s, 15m, 6h or 1h30m"


class ScenarioError(ValueError):
    """A scenario that cannot be loaded. One problem a line: file, field, what was expected."""

    def __init__(self, problems: str | Sequence[str]) -> None:
        self.problems: tuple[str, ...] = (
            (problems,) if isinstance(problems, str) else tuple(problems)
        )
        shown = list(self.problems[:MAX_REPORTED_PROBLEMS])
        if len(self.problems) > MAX_REPORTED_PROBLEMS:
            shown.append(f"... and {len(self.problems) - MAX_REPORTED_PROBLEMS} more problems")
        super().__init__("\n".join(shown))


@dataclass(frozen=True)
class Scenario:
    """A loaded scenario, in domain terms. Times are seconds from the scenario start."""

    name: str
    source: Path | None
    """The scenario file it came from; None for a scenario built in code."""
    duration_s: float
    step_s: float
    sites: tuple[model.Site, ...]
    initial_tank_kwh: Mapping[str, float]
    """Tank energy at the start, per site name."""
    demand: Mapping[str, model.DemandSeries]
    """True demand per site name, kW, one value per step covering ``[0, duration_s)``: the mean
    of the step-held CSV over each step, times its scale. Not capped at ``maxThermalKW``."""
    jobs: tuple[model.JobRequest, ...]
    """``release_s`` = submit time, ``deadline_s`` = latest start; sorted by (release, id)."""

    # Read-only mappings do not pickle; ``simulate --parallel`` sends scenarios to workers.
    def __getstate__(self) -> dict[str, object]:
        state = dict(self.__dict__)
        for key in _READ_ONLY_FIELDS:
            state[key] = dict(state[key])
        return state

    def __setstate__(self, state: dict[str, object]) -> None:
        for key, value in state.items():
            if key in _READ_ONLY_FIELDS:
                value = types.MappingProxyType(value)  # type: ignore[arg-type]
            object.__setattr__(self, key, value)


_READ_ONLY_FIELDS = ("initial_tank_kwh", "demand")


def parse_duration(text: str) -> float:
    """Seconds in a Go-style duration such as ``"15m"``, ``"168h"``, ``"1h30m"``, ``"90s"``.

    Go's grammar (:func:`heatshift.durations.parse_duration`): a sequence of decimal numbers
    with units ``ns``, ``us``, ``ms``, ``s``, ``m``, ``h``; a sign is allowed, a bare ``0`` too.
    Raises :class:`ValueError` naming the text and the expected form.
    """
    if not isinstance(text, str):
        raise ValueError(f"expected {_DURATION_EXAMPLES} (a string with a unit), got {text!r}")
    try:
        return durations.parse_duration(text.strip())
    except durations.DurationError:
        raise ValueError(
            f"invalid duration {text!r}: expected {_DURATION_EXAMPLES} "
            "(numbers with units ns, us, ms, s, m, h)"
        ) from None


# --- the file, as written --------------------------------------------------------------


def _duration_within(allowed: bounds.DurationRange) -> pydantic.BeforeValidator:
    """A validator of a duration string within ``allowed`` (the rule said in its error)."""

    def check(value: object) -> str:
        if not isinstance(value, str):
            raise ValueError(f"expected {_DURATION_EXAMPLES} (a string with a unit), got {value!r}")
        seconds = parse_duration(value)  # ValueError with the expectation
        if allowed.problem(seconds) is not None:
            raise ValueError(f"expected a duration {allowed.words()}, got {value!r}")
        return value.strip()

    return pydantic.BeforeValidator(check)


def _dns_label(value: str) -> str:
    if not _DNS_LABEL.match(value):
        raise ValueError(
            "expected a lowercase DNS label (a-z, 0-9 and '-', at most 63 characters, "
            f"starting and ending with a letter or digit), got {value!r}"
        )
    return value


SiteName = Annotated[str, pydantic.AfterValidator(_dns_label)]


class _Spec(BaseModel):
    """A node of the file: frozen, unknown fields rejected, finite numbers only, and strict
    types: ``cpu: true`` or ``cpu: "16"`` is an error, not a number."""

    model_config = ConfigDict(frozen=True, extra="forbid", allow_inf_nan=False, strict=True)


class CapacitySpec(_Spec):
    cpu: float = Field(ge=0, le=bounds.MAX_CPU_CORES, description="CPU cores.")
    memory_gib: float = Field(
        alias="memoryGiB", ge=0, le=bounds.MAX_MEMORY_GIB, description="Memory, GiB."
    )
    gpu: int = Field(default=0, ge=0, le=bounds.MAX_GPUS, description="Whole GPUs.")


class PowerSpec(_Spec):
    idle_watts: float = Field(alias="idleWatts", ge=0, le=bounds.MAX_SITE_POWER_WATTS)
    watts_per_gpu: float = Field(
        default=0.0,
        alias="wattsPerGPU",
        ge=0,
        le=bounds.MAX_SITE_POWER_WATTS,
        description="Required when the site has GPUs.",
    )
    watts_per_cpu: float = Field(alias="wattsPerCPU", ge=0, le=bounds.MAX_SITE_POWER_WATTS)


class TankSpec(_Spec):
    capacity_kwh: float = Field(alias="capacityKWh", ge=0, le=bounds.MAX_TANK_CAPACITY_KWH)
    initial_kwh: float = Field(
        default=0.0, alias="initialKWh", ge=0, le=bounds.MAX_TANK_CAPACITY_KWH
    )
    loss_per_hour: float = Field(default=0.0, alias="lossPerHour", ge=0, lt=1)


class DemandCsvSpec(_Spec):
    path: str = Field(min_length=1, description="Relative to the scenario file.")
    time_column: str = Field(default="t_s", alias="timeColumn", min_length=1)
    kw_column: str = Field(default="kw", alias="kwColumn", min_length=1)
    scale: float = Field(default=1.0, ge=0, description="Each kW value times this.")


class DemandSpec(_Spec):
    """Exactly one of ``csv`` and ``constantKW``."""

    csv: DemandCsvSpec | None = None
    constant_kw: float | None = Field(
        default=None, alias="constantKW", ge=0, le=bounds.MAX_THERMAL_KW
    )


class OfftakerSpec(_Spec):
    kind: model.OfftakerKind = Field(strict=False)  # YAML gives the enum's value, a string
    max_thermal_kw: float = Field(alias="maxThermalKW", gt=0, le=bounds.MAX_THERMAL_KW)
    demand: DemandSpec
    backup: model.BackupKind = Field(default=model.BackupKind.GAS, strict=False)
    """What the offtaker burns without the site's heat (for fuel and CO2 avoided)."""


class SiteSpec(_Spec):
    name: SiteName
    capacity: CapacitySpec
    power: PowerSpec
    heat_recovery_efficiency: float = Field(alias="heatRecoveryEfficiency", gt=0, le=1)
    tank: TankSpec = TankSpec(capacityKWh=0.0)
    offtaker: OfftakerSpec


class JobsCsvSpec(_Spec):
    path: str = Field(min_length=1, description="Relative to the scenario file.")


class JobsSpec(_Spec):
    csv: JobsCsvSpec


class ScenarioSpec(_Spec):
    duration: Annotated[str, _duration_within(bounds.SIMULATION_SPAN)]
    step: Annotated[str, _duration_within(bounds.SIMULATION_STEP)]
    default_max_delay: Annotated[str, _duration_within(bounds.MAX_DELAY)] = Field(
        default=DEFAULT_MAX_DELAY, alias="defaultMaxDelay"
    )
    sites: list[SiteSpec] = Field(min_length=1, max_length=bounds.MAX_SITES)
    jobs: JobsSpec


class Metadata(_Spec):
    name: str = Field(min_length=1)
    description: str = ""
    labels: dict[str, str] = Field(default_factory=dict)
    annotations: dict[str, str] = Field(default_factory=dict)


class ScenarioFile(_Spec):
    """The whole scenario file."""

    api_version: Literal["heatshift.dev/v1alpha1"] = Field(alias="apiVersion")
    kind: Literal["Scenario"]
    metadata: Metadata
    spec: ScenarioSpec


# --- reporting pydantic errors as lines --------------------------------------------------


def _field_path(loc: Sequence[int | str]) -> str:
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += f".{part}" if out else part
    return out or "(top level)"


def _models_in(annotation: Any) -> Iterator[type[BaseModel]]:
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        yield annotation
    for arg in typing.get_args(annotation):
        yield from _models_in(arg)


def _model_at(loc: Sequence[int | str]) -> type[BaseModel] | None:
    """The file model that holds the field at ``loc`` (aliases), for "expected one of"."""
    cls: type[BaseModel] = ScenarioFile
    for part in loc:
        if isinstance(part, int):
            continue  # a list item: its model is the list's element model, already chosen
        fields = {f.alias or name: f for name, f in cls.model_fields.items()}
        field = fields.get(part)
        found = next(_models_in(field.annotation), None) if field is not None else None
        if found is None:
            return None
        cls = found
    return cls


def _field_names(cls: type[BaseModel]) -> list[str]:
    return [f.alias or name for name, f in cls.model_fields.items()]


def _shown(bound: object) -> str:
    """A bound as people write it: ``1,000,000`` rather than ``1e+06``."""
    if isinstance(bound, float) and bound.is_integer() and abs(bound) < 1e15:
        bound = int(bound)
    if isinstance(bound, int):
        return f"{bound:,}"
    return f"{bound:g}" if isinstance(bound, float) else str(bound)


def _got(value: object) -> str:
    if isinstance(value, dict | list):
        return ""
    return f", got {value!r}"


def _error_line(file: Path, error: Mapping[str, Any]) -> str:
    loc = tuple(error["loc"])
    kind = error["type"]
    ctx = error.get("ctx") or {}
    value = error.get("input")
    if kind == "extra_forbidden":
        parent = _model_at(loc[:-1])
        allowed = _field_names(parent) if parent is not None else []
        close = difflib.get_close_matches(str(loc[-1]), allowed, n=1)
        hint = f"did you mean {close[0]!r}? " if close else ""
        expected = f"expected one of: {', '.join(allowed)}" if allowed else "remove it"
        return f"{file}: {_field_path(loc)}: unknown field; {hint}{expected}"
    if kind == "missing":
        message = "required field is missing"
    elif kind == "value_error":
        message = str(ctx.get("error", error["msg"]))
    elif kind in ("greater_than", "greater_than_equal", "less_than", "less_than_equal"):
        op = {"greater_than": ">", "greater_than_equal": ">=", "less_than": "<"}.get(kind, "<=")
        bound = next(iter(ctx.values()))
        message = f"expected a number {op} {_shown(bound)}{_got(value)}"
    elif kind == "finite_number":
        message = f"expected a finite number{_got(value)}"
    elif kind in ("float_type", "float_parsing"):
        message = f"expected a number{_got(value)}"
    elif kind in ("int_type", "int_parsing", "int_from_float"):
        message = f"expected a whole number{_got(value)}"
    elif kind == "string_type":
        message = f"expected a string{_got(value)}"
    elif kind == "string_too_short":
        message = f"expected a non-empty string{_got(value)}"
    elif kind in ("model_type", "model_attributes_type", "dict_type"):
        message = f"expected a mapping of fields{_got(value)}"
    elif kind == "list_type":
        message = f"expected a list{_got(value)}"
    elif kind == "too_short":
        message = f"expected at least {ctx.get('min_length', 1)} item(s)"
    elif kind == "too_long":
        message = f"expected at most {_shown(ctx.get('max_length'))} item(s)"
    elif kind in ("literal_error", "enum"):
        message = f"expected {ctx.get('expected', 'one of the allowed values')}{_got(value)}"
    else:
        message = f"{error['msg']}{_got(value)}"
    return f"{file}: {_field_path(loc)}: {message}"


# --- YAML --------------------------------------------------------------------------------


class _StrictLoader(yaml.SafeLoader):
    """Safe YAML that rejects a key given twice in one mapping (a silent override otherwise)."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Hashable, Any]:
        seen: dict[object, int] = {}
        for key_node, _ in node.value:
            if key_node.tag == "tag:yaml.org,2002:merge":
                continue
            key = self.construct_object(key_node, deep=deep)
            if isinstance(key, Hashable) and key in seen:
                raise yaml.constructor.ConstructorError(
                    "while reading a mapping",
                    node.start_mark,
                    f"found the key {key!r} twice (first on line {seen[key]}); "
                    "expected each key once",
                    key_node.start_mark,
                )
            if isinstance(key, Hashable):
                seen[key] = key_node.start_mark.line + 1
        return super().construct_mapping(node, deep=deep)


def _read_yaml(path: Path) -> object:
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ScenarioError(
            f"{path}: scenario file not found; expected a path to a scenario YAML file"
        ) from None
    except (OSError, UnicodeDecodeError) as err:
        raise ScenarioError(f"{path}: cannot read the scenario file: {err}") from None
    try:
        return yaml.load(text, Loader=_StrictLoader)  # a SafeLoader subclass: safe
    except yaml.MarkedYAMLError as err:
        mark = err.problem_mark or err.context_mark
        where = f"{path} line {mark.line + 1}, column {mark.column + 1}" if mark else str(path)
        problem = err.problem or err.context or "malformed YAML"
        raise ScenarioError(f"{where}: expected valid YAML: {problem}") from None
    except yaml.YAMLError as err:
        raise ScenarioError(f"{path}: expected valid YAML: {err}") from None


# --- CSV ---------------------------------------------------------------------------------


@dataclass
class _Table:
    """A CSV file read whole: its header and its rows with their line numbers."""

    file: Path
    header: list[str]
    rows: list[tuple[int, list[str]]]


def _read_csv(file: Path, named_by: str, problems: list[str]) -> _Table | None:
    """Read ``file``; on failure add a problem naming the field that points at it."""
    try:
        with file.open(encoding="utf-8-sig", newline="") as handle:
            reader = csv.reader(handle)
            header: list[str] | None = None
            rows: list[tuple[int, list[str]]] = []
            for row in reader:
                if not any(cell.strip() for cell in row):
                    continue  # blank line
                if header is None:
                    header = [cell.strip() for cell in row]
                elif len(rows) == bounds.MAX_CSV_ROWS:
                    problems.append(
                        f"{file} line {reader.line_num}: expected at most "
                        f"{bounds.MAX_CSV_ROWS:,} rows after the header"
                    )
                    return None
                else:
                    rows.append((reader.line_num, [cell.strip() for cell in row]))
    except FileNotFoundError:
        problems.append(f"{named_by}: file {file} not found; expected a CSV file")
        return None
    except (OSError, UnicodeDecodeError, csv.Error) as err:
        problems.append(f"{named_by}: cannot read {file}: {err}; expected a CSV file")
        return None
    if header is None:
        problems.append(f"{file}: the file is empty; expected a header row")
        return None
    repeated = sorted({c for c in header if header.count(c) > 1})
    if repeated:
        problems.append(
            f"{file} line 1: column {', '.join(repeated)} appears twice; expected each column once"
        )
        return None
    return _Table(file, header, rows)


def _float(text: str, where: str, problems: list[str], expected: str) -> float | None:
    try:
        return float(text)
    except ValueError:
        problems.append(f"{where}: expected {expected}, got {text!r}")
        return None


def _number(
    text: str, where: str, problems: list[str], *, maximum: float, minimum: float = 0.0
) -> float | None:
    """A finite number in ``[minimum, maximum]``, or None (and a problem) when it is not one."""
    value = _float(text, where, problems, "a number")
    if value is None:
        return None
    if not math.isfinite(value):
        problems.append(f"{where}: expected a finite number, got {text!r}")
        return None
    if not minimum <= value <= maximum:
        problems.append(
            f"{where}: expected a number from {_shown(minimum)} to {_shown(maximum)}, got {text!r}"
        )
        return None
    return value


def _whole(text: str, where: str, problems: list[str], *, maximum: int) -> int | None:
    value = _number(text, where, problems, maximum=maximum)
    if value is None:
        return None
    if value != int(value):
        problems.append(f"{where}: expected a whole number, got {text!r}")
        return None
    return int(value)


def _seconds(
    text: str, where: str, problems: list[str], allowed: bounds.DurationRange
) -> float | None:
    """A number of seconds within ``allowed``, or None (and a problem saying the rule)."""
    value = _float(text, where, problems, "a number of seconds")
    if value is not None and allowed.problem(value) is not None:
        problems.append(
            f"{where}: expected {allowed.what} in seconds, {allowed.words()}, got {text!r}"
        )
        return None
    return value


def _row_fields(
    table: _Table, line: int, row: list[str], problems: list[str]
) -> dict[str, str] | None:
    if len(row) != len(table.header):
        problems.append(
            f"{table.file} line {line}: expected {len(table.header)} fields "
            f"({','.join(table.header)}), got {len(row)}"
        )
        return None
    return dict(zip(table.header, row, strict=True))


def _step_means(
    times: Sequence[float], values: Sequence[float], step: float, steps: int
) -> tuple[float, ...]:
    """The mean of a step-held series over each ``[i*step, (i+1)*step)``, ``i < steps``.

    ``values[k]`` holds over ``[times[k], times[k+1])``; ``values[0]`` also before ``times[0]``
    and the last value forever after. A step inside one segment gets that value exactly.
    """
    n = len(times)
    out: list[float] = []
    k = 0  # the segment holding at the start of the current step
    for i in range(steps):
        t0, t1 = i * step, (i + 1) * step
        while k + 1 < n and times[k + 1] <= t0:
            k += 1
        if k + 1 >= n or times[k + 1] >= t1:
            out.append(values[k])
            continue
        total, t, j = 0.0, t0, k
        while t < t1:
            end = times[j + 1] if j + 1 < n else math.inf
            seg_end = min(end, t1)
            total += values[j] * (seg_end - t)
            t = seg_end
            if seg_end == end:
                j += 1
        out.append(total / step)
    return tuple(out)


def _demand_from_csv(
    spec: DemandCsvSpec,
    scenario_file: Path,
    field: str,
    step: float,
    steps: int,
    problems: list[str],
) -> tuple[float, ...] | None:
    file = scenario_file.parent / spec.path
    table = _read_csv(file, f"{scenario_file}: {field}.path", problems)
    if table is None:
        return None
    before = len(problems)
    for column, key in ((spec.time_column, "timeColumn"), (spec.kw_column, "kwColumn")):
        if column not in table.header:
            problems.append(
                f"{file} line 1: expected a column {column!r} ({scenario_file}: {field}.{key})"
                f", found: {', '.join(table.header)}"
            )
    if len(problems) > before:
        return None
    if not table.rows:
        problems.append(f"{file}: expected at least one row of demand after the header")
        return None
    times: list[float] = []
    values: list[float] = []
    previous_line = 0
    for line, row in table.rows:
        cells = _row_fields(table, line, row, problems)
        if cells is None:
            continue
        where_t = f"{file} line {line}, column {spec.time_column}"
        where_kw = f"{file} line {line}, column {spec.kw_column}"
        t = _seconds(cells[spec.time_column], where_t, problems, _DEMAND_TIME)
        kw = _number(
            cells[spec.kw_column], f"{where_kw} (kW)", problems, maximum=bounds.MAX_THERMAL_KW
        )
        if kw is not None and kw * spec.scale > bounds.MAX_THERMAL_KW:
            problems.append(
                f"{where_kw} (kW): expected at most {_shown(bounds.MAX_THERMAL_KW)} kW after "
                f"scaling by {spec.scale:g} ({scenario_file}: {field}.scale), got {kw:g}"
            )
            kw = None
        if t is not None and times and t <= times[-1]:
            problems.append(
                f"{where_t}: expected times in ascending order, got {t:g} after "
                f"{times[-1]:g} on line {previous_line}"
            )
            t = None
        if t is not None and kw is not None:
            times.append(t)
            values.append(kw * spec.scale)
            previous_line = line
    if len(problems) > before:
        return None
    return _step_means(times, values, step, steps)


def _jobs_from_csv(
    spec: JobsCsvSpec,
    scenario_file: Path,
    site_names: Sequence[str],
    default_max_delay_s: float,
    problems: list[str],
) -> list[model.JobRequest]:
    file = scenario_file.parent / spec.path
    table = _read_csv(file, f"{scenario_file}: spec.jobs.csv.path", problems)
    if table is None:
        return []
    missing = [c for c in JOB_COLUMNS if c not in table.header]
    unknown = [c for c in table.header if c not in JOB_COLUMNS]
    if missing or unknown:
        found = f"missing {', '.join(missing)}" if missing else ""
        extra = f"unknown {', '.join(unknown)}" if unknown else ""
        problems.append(
            f"{file} line 1: expected the header {','.join(JOB_COLUMNS)}; "
            + "; ".join(p for p in (found, extra) if p)
        )
        return []
    known_sites = set(site_names)
    first_line: dict[str, int] = {}
    jobs: list[model.JobRequest] = []
    for line, row in table.rows:
        cells = _row_fields(table, line, row, problems)
        if cells is None:
            continue
        before = len(problems)

        def at(column: str, line: int = line) -> str:
            return f"{file} line {line}, column {column}"

        job_id = cells["id"]
        if not job_id:
            problems.append(f"{at('id')}: expected a job id, got an empty field")
        elif job_id in first_line:
            problems.append(
                f"{at('id')}: duplicate job id {job_id!r} (first on line {first_line[job_id]}); "
                "expected unique ids"
            )
        else:
            first_line[job_id] = line
        submit = _seconds(cells["submit_s"], at("submit_s"), problems, _SUBMIT_TIME)
        duration = _seconds(cells["duration_s"], at("duration_s"), problems, bounds.JOB_DURATION)
        cpu = _number(cells["cpu"], at("cpu"), problems, maximum=bounds.MAX_CPU_CORES)
        memory = _number(
            cells["memory_gib"], at("memory_gib"), problems, maximum=bounds.MAX_MEMORY_GIB
        )
        gpu = _whole(cells["gpu"], at("gpu"), problems, maximum=bounds.MAX_GPUS)
        power = (
            _number(
                cells["power_watts"],
                at("power_watts"),
                problems,
                maximum=bounds.MAX_JOB_POWER_WATTS,
            )
            if cells["power_watts"]
            else None
        )
        delay = (
            _seconds(cells["max_delay_s"], at("max_delay_s"), problems, bounds.MAX_DELAY)
            if cells["max_delay_s"]
            else default_max_delay_s
        )
        priority = (
            _whole(cells["priority"], at("priority"), problems, maximum=bounds.MAX_PRIORITY)
            if cells["priority"]
            else 1
        )
        allowed: frozenset[str] | None = None
        if cells["sites"]:
            names = [s.strip() for s in cells["sites"].split(";") if s.strip()]
            strangers = [n for n in names if n not in known_sites]
            if not names:
                # Not "any site": a field that names no site is a slip, not a choice.
                problems.append(
                    f"{at('sites')}: expected ';'-separated site names from: "
                    f"{', '.join(site_names)} (or an empty field for any site), "
                    f"got {cells['sites']!r}"
                )
            elif strangers:
                problems.append(
                    f"{at('sites')}: unknown site {', '.join(map(repr, strangers))}; expected "
                    f"';'-separated names from: {', '.join(site_names)}"
                )
            allowed = frozenset(names) if names else None
        if len(problems) > before:
            continue
        assert submit is not None and duration is not None and delay is not None
        assert cpu is not None and memory is not None and gpu is not None
        assert priority is not None
        try:
            jobs.append(
                model.JobRequest(
                    id=job_id,
                    resources=model.Resources(cpu=cpu, memory_gib=memory, gpu=gpu),
                    duration_s=duration,
                    power_watts=power,
                    release_s=submit,
                    deadline_s=submit + delay,
                    allowed_sites=allowed,
                    priority=priority,
                )
            )
        except pydantic.ValidationError as err:  # not expected after the checks above
            problems.append(f"{file} line {line}: {err.errors()[0]['msg']}")
    return jobs


# --- loading -----------------------------------------------------------------------------


def _check_spec(file: Path, spec: ScenarioSpec, problems: list[str]) -> None:
    """Cross-field rules of a structurally valid spec (each names its field)."""
    duration = parse_duration(spec.duration)
    step = parse_duration(spec.step)
    if step > duration:
        problems.append(
            f"{file}: spec.step: expected a step no longer than spec.duration ({spec.duration})"
            f", got {spec.step!r}"
        )
    elif abs(duration / step - round(duration / step)) > 1e-9:
        problems.append(
            f"{file}: spec.step: expected a step that divides spec.duration ({spec.duration}) "
            f"into whole steps, got {spec.step!r}"
        )
    elif round(duration / step) > bounds.MAX_SERIES_SAMPLES:
        problems.append(
            f"{file}: spec.step: expected at most {bounds.MAX_SERIES_SAMPLES:,} steps in "
            f"spec.duration ({spec.duration}), got {round(duration / step):,} of {spec.step}"
        )
    first: dict[str, int] = {}
    for i, site in enumerate(spec.sites):
        at = f"{file}: spec.sites[{i}]"
        if site.name in first:
            problems.append(
                f"{at}.name: duplicate site name {site.name!r} (also spec.sites[{first[site.name]}]"
                ".name); expected unique names"
            )
        else:
            first[site.name] = i
        if site.tank.initial_kwh > site.tank.capacity_kwh:
            problems.append(
                f"{at}.tank.initialKWh: expected at most capacityKWh ({site.tank.capacity_kwh:g})"
                f", got {site.tank.initial_kwh:g}"
            )
        if site.capacity.gpu > 0 and "watts_per_gpu" not in site.power.model_fields_set:
            problems.append(
                f"{at}.power.wattsPerGPU: required field is missing (capacity.gpu is "
                f"{site.capacity.gpu})"
            )
        demand = site.offtaker.demand
        if (demand.csv is None) == (demand.constant_kw is None):
            got = "both" if demand.csv is not None else "neither"
            problems.append(
                f"{at}.offtaker.demand: expected exactly one of csv or constantKW, got {got}"
            )


def load_scenario(path: Path) -> Scenario:
    """Load and validate a scenario file and the CSV files it names.

    Raises :class:`ScenarioError` listing every problem found (file, field, expectation).
    """
    path = Path(path)
    raw = _read_yaml(path)
    if not isinstance(raw, dict):
        raise ScenarioError(
            f"{path}: (top level): expected a mapping with apiVersion, kind, metadata and spec"
            f"{_got(raw)}"
        )
    try:
        doc = ScenarioFile.model_validate(raw)
    except pydantic.ValidationError as err:
        raise ScenarioError([_error_line(path, e) for e in err.errors()]) from None
    spec = doc.spec
    problems: list[str] = []
    _check_spec(path, spec, problems)
    if problems:
        raise ScenarioError(problems)

    duration = parse_duration(spec.duration)
    step = parse_duration(spec.step)
    steps = round(duration / step)
    sites: list[model.Site] = []
    initial: dict[str, float] = {}
    demand: dict[str, model.DemandSeries] = {}
    for i, s in enumerate(spec.sites):
        sites.append(
            model.Site(
                name=s.name,
                capacity=model.Resources(
                    cpu=s.capacity.cpu, memory_gib=s.capacity.memory_gib, gpu=s.capacity.gpu
                ),
                power=model.PowerModel(
                    idle_watts=s.power.idle_watts,
                    watts_per_gpu=s.power.watts_per_gpu,
                    watts_per_cpu=s.power.watts_per_cpu,
                ),
                heat_recovery_efficiency=s.heat_recovery_efficiency,
                tank=model.Tank(
                    capacity_kwh=s.tank.capacity_kwh, loss_per_hour=s.tank.loss_per_hour
                ),
                offtaker=model.Offtaker(
                    kind=s.offtaker.kind,
                    max_thermal_kw=s.offtaker.max_thermal_kw,
                    backup=s.offtaker.backup,
                ),
            )
        )
        initial[s.name] = s.tank.initial_kwh
        spec_demand = s.offtaker.demand
        if spec_demand.constant_kw is not None:
            kw: tuple[float, ...] | None = (spec_demand.constant_kw,) * steps
        else:
            assert spec_demand.csv is not None
            kw = _demand_from_csv(
                spec_demand.csv,
                path,
                f"spec.sites[{i}].offtaker.demand.csv",
                step,
                steps,
                problems,
            )
        if kw is not None:
            demand[s.name] = model.DemandSeries(start_s=0.0, step_s=step, kw=kw)
    jobs = _jobs_from_csv(
        spec.jobs.csv,
        path,
        [s.name for s in sites],
        parse_duration(spec.default_max_delay),
        problems,
    )
    if problems:
        raise ScenarioError(problems)
    return Scenario(
        name=doc.metadata.name,
        source=path,
        duration_s=duration,
        step_s=step,
        sites=tuple(sites),
        initial_tank_kwh=types.MappingProxyType(initial),
        demand=types.MappingProxyType(demand),
        jobs=tuple(sorted(jobs, key=lambda j: (j.release_s, j.id))),
    )


def builtin_scenario_path(name: str = BUILTIN_SCENARIO) -> Path:
    """The scenario file of a built-in scenario, shipped as package data."""
    resource = importlib.resources.files("heatshift.sim") / "scenarios" / name / "scenario.yaml"
    if not isinstance(resource, Path):
        # A zipped install: the scenario and its CSVs are not files on disk.
        raise ScenarioError(
            f"built-in scenario {name!r}: expected the heatshift package installed as files, "
            f"found {resource}"
        )
    if not resource.is_file():
        raise ScenarioError(
            f"built-in scenario {name!r}: not found at {resource}; expected one of: "
            f"{', '.join(builtin_scenarios()) or 'none'}"
        )
    return resource


def builtin_scenarios() -> tuple[str, ...]:
    """Names of the built-in scenarios."""
    root = importlib.resources.files("heatshift.sim") / "scenarios"
    if not root.is_dir():
        return ()
    return tuple(
        sorted(d.name for d in root.iterdir() if d.is_dir() and (d / "scenario.yaml").is_file())
    )


def load_builtin_scenario(name: str = BUILTIN_SCENARIO) -> Scenario:
    """Load a built-in scenario (by default the winter week)."""
    return load_scenario(builtin_scenario_path(name))
