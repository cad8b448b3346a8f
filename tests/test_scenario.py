"""Scenario files: the built-in winter week, the loader's results and its error messages."""

from __future__ import annotations

import copy
import itertools
import math
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml
from hypothesis import given
from hypothesis import strategies as st

from heatshift import bounds, model
from heatshift.sim import scenario

HOUR = 3600.0
JOBS_HEADER = ",".join(scenario.JOB_COLUMNS)


# --- the built-in scenario ----------------------------------------------------------------


@pytest.fixture(scope="module")
def winter_week() -> scenario.Scenario:
    return scenario.load_builtin_scenario()


def test_builtin_scenario_is_package_data() -> None:
    path = scenario.builtin_scenario_path()
    assert path.is_file()
    assert path.name == "scenario.yaml"
    assert path.parent.name == scenario.BUILTIN_SCENARIO
    assert Path(scenario.__file__).parent in path.parents
    assert scenario.BUILTIN_SCENARIO in scenario.builtin_scenarios()
    assert (path.parent / "README.md").is_file()


def test_builtin_scenario_shape(winter_week: scenario.Scenario) -> None:
    sc = winter_week
    assert sc.name == "winter-week"
    assert sc.source == scenario.builtin_scenario_path()
    assert sc.duration_s == 168 * HOUR
    assert sc.step_s == 900
    assert len(sc.sites) == 6
    names = [s.name for s in sc.sites]
    assert len(set(names)) == 6
    # Every offtaker kind appears.
    assert {s.offtaker.kind for s in sc.sites} == set(model.OfftakerKind)
    for s in sc.sites:
        assert 0.75 <= s.heat_recovery_efficiency <= 0.9
        assert 20 <= s.tank.capacity_kwh <= 200
        assert 0.005 <= s.tank.loss_per_hour <= 0.02
        assert 300 <= s.power.watts_per_gpu <= 700
        assert 5 <= s.power.watts_per_cpu <= 10
        assert 0 <= sc.initial_tank_kwh[s.name] <= s.tank.capacity_kwh


def test_builtin_demand_covers_the_week(winter_week: scenario.Scenario) -> None:
    sc = winter_week
    steps = round(sc.duration_s / sc.step_s)
    assert set(sc.demand) == {s.name for s in sc.sites}
    for series in sc.demand.values():
        assert series.start_s == 0.0
        assert series.step_s == sc.step_s
        assert len(series.kw) == steps
        assert series.end_s == sc.duration_s
        assert all(math.isfinite(v) and v >= 0 for v in series.kw)
    # Winter toward spring: the last day needs clearly less heat than the first.
    day = round(24 * HOUR / sc.step_s)
    first = sum(sum(s.kw[:day]) for s in sc.demand.values())
    last = sum(sum(s.kw[-day:]) for s in sc.demand.values())
    assert last < 0.75 * first
    # The office wants (almost) nothing at the weekend.
    office = next(s.name for s in sc.sites if s.offtaker.kind is model.OfftakerKind.OFFICE)
    assert max(sc.demand[office].kw[5 * day :]) < 1.0


def test_builtin_jobs_make_sense(winter_week: scenario.Scenario) -> None:
    sc = winter_week
    assert 1000 <= len(sc.jobs) <= 2500
    ids = [j.id for j in sc.jobs]
    assert len(set(ids)) == len(ids)
    assert list(sc.jobs) == sorted(sc.jobs, key=lambda j: (j.release_s, j.id))
    gpu_jobs = [j for j in sc.jobs if j.resources.gpu > 0]
    assert 50 <= len(gpu_jobs) <= len(sc.jobs) // 2
    largest_gpu_site = max(s.capacity.gpu for s in sc.sites)
    for j in sc.jobs:
        assert j.deadline_s >= j.release_s
        assert 0 <= j.release_s < sc.duration_s  # submitted within the week
        assert j.deadline_s - j.release_s <= 24 * HOUR
        assert j.duration_s <= 24 * HOUR
        assert j.resources.gpu <= largest_gpu_site
        assert 0 <= j.priority <= 3
        # Every job fits some site it may run at.
        assert any(
            j.may_run_at(s.name) and j.resources.fits_within(s.capacity) for s in sc.sites
        ), j.id
    assert any(j.allowed_sites for j in sc.jobs)
    assert any(j.power_watts is not None for j in sc.jobs)
    priorities = [j.priority for j in sc.jobs]
    assert max(set(priorities), key=priorities.count) == 1


# --- a small hand-written scenario ------------------------------------------------------


def base_document() -> dict[str, Any]:
    """A valid two-site scenario: one constant demand, one from a CSV."""
    site = {
        "capacity": {"cpu": 64, "memoryGiB": 256, "gpu": 8},
        "power": {"idleWatts": 300, "wattsPerGPU": 500, "wattsPerCPU": 8},
        "heatRecoveryEfficiency": 0.85,
        "tank": {"capacityKWh": 40, "initialKWh": 10, "lossPerHour": 0.01},
    }
    return {
        "apiVersion": "heatshift.dev/v1alpha1",
        "kind": "Scenario",
        "metadata": {"name": "small"},
        "spec": {
            "duration": "2h",
            "step": "30m",
            "defaultMaxDelay": "6h",
            "sites": [
                {
                    "name": "pool-a",
                    **copy.deepcopy(site),
                    "offtaker": {
                        "kind": "pool",
                        "maxThermalKW": 20,
                        "demand": {"constantKW": 5},
                    },
                },
                {
                    "name": "flats-b",
                    **copy.deepcopy(site),
                    "offtaker": {
                        "kind": "residential",
                        "maxThermalKW": 3,  # below the demand: capping is not the loader's job
                        "demand": {
                            "csv": {
                                "path": "flats.csv",
                                "timeColumn": "t",
                                "kwColumn": "heat",
                                "scale": 2.0,
                            }
                        },
                    },
                },
            ],
            "jobs": {"csv": {"path": "jobs.csv"}},
        },
    }


DEMAND_CSV = "t,heat\n600,2\n1200,6\n3600,4\n7000,10\n9000,1\n"
JOBS_CSV = (
    f"{JOBS_HEADER}\n"
    "late,3600,600,4,8,0,,,,\n"
    "gpu-1,0,7200,8,64,2,900,1800,flats-b; pool-a,3\n"
    "cpu-1,0,1800,16,32,0,,7200,pool-a,0\n"
)


def write_scenario(
    directory: Path,
    document: dict[str, Any] | None = None,
    files: dict[str, str] | None = None,
) -> Path:
    contents = {"flats.csv": DEMAND_CSV, "jobs.csv": JOBS_CSV}
    contents.update(files or {})
    for name, text in contents.items():
        (directory / name).write_text(text)
    path = directory / "scenario.yaml"
    path.write_text(yaml.safe_dump(document or base_document(), sort_keys=False))
    return path


def test_small_scenario_round_trips(tmp_path: Path) -> None:
    path = write_scenario(tmp_path)
    sc = scenario.load_scenario(path)

    assert sc.name == "small"
    assert sc.source == path
    assert (sc.duration_s, sc.step_s) == (7200.0, 1800.0)
    assert [s.name for s in sc.sites] == ["pool-a", "flats-b"]
    flats = sc.sites[1]
    assert flats.capacity == model.Resources(cpu=64, memory_gib=256, gpu=8)
    assert flats.power == model.PowerModel(idle_watts=300, watts_per_gpu=500, watts_per_cpu=8)
    assert flats.tank == model.Tank(capacity_kwh=40, loss_per_hour=0.01)
    assert flats.offtaker == model.Offtaker(kind=model.OfftakerKind.RESIDENTIAL, max_thermal_kw=3)
    assert flats.heat_recovery_efficiency == 0.85
    assert dict(sc.initial_tank_kwh) == {"pool-a": 10.0, "flats-b": 10.0}

    assert sc.demand["pool-a"] == model.DemandSeries(start_s=0, step_s=1800, kw=(5.0,) * 4)
    kw = sc.demand["flats-b"].kw
    assert len(kw) == 4
    # [0, 1800): 2 (also before the first row, at 600) until 1200, then 6; times the scale 2.
    assert kw[0] == pytest.approx(2 * (2 * 1200 + 6 * 600) / 1800)
    # [1800, 3600): inside one row's span: that value exactly, scaled, not capped at 3 kW.
    assert kw[1] == 12.0
    assert kw[2] == 8.0
    # [5400, 7200): 4 until 7000, then 10; rows after the end are ignored.
    assert kw[3] == pytest.approx(2 * (4 * 1600 + 10 * 200) / 1800)


def test_small_scenario_jobs(tmp_path: Path) -> None:
    sc = scenario.load_scenario(write_scenario(tmp_path))
    assert [j.id for j in sc.jobs] == ["cpu-1", "gpu-1", "late"]  # by (release, id)
    cpu, gpu, late = sc.jobs
    assert late == model.JobRequest(
        id="late",
        resources=model.Resources(cpu=4, memory_gib=8, gpu=0),
        duration_s=600,
        power_watts=None,  # empty: the site's power model
        release_s=3600,
        deadline_s=3600 + 6 * HOUR,  # empty: spec.defaultMaxDelay
        allowed_sites=None,  # empty: anywhere
        priority=1,  # empty: 1
    )
    assert gpu.resources == model.Resources(cpu=8, memory_gib=64, gpu=2)
    assert gpu.power_watts == 900
    assert gpu.deadline_s == 1800
    assert gpu.allowed_sites == frozenset({"flats-b", "pool-a"})
    assert gpu.priority == 3
    assert cpu.allowed_sites == frozenset({"pool-a"})
    assert (cpu.priority, cpu.deadline_s) == (0, 7200)


def test_defaults_and_a_job_that_fits_nowhere(tmp_path: Path) -> None:
    doc = base_document()
    del doc["spec"]["defaultMaxDelay"]
    del doc["spec"]["sites"][0]["tank"]
    jobs = f"{JOBS_HEADER}\nhuge,0,60,1,1,64,,,,\n"
    sc = scenario.load_scenario(write_scenario(tmp_path, doc, {"jobs.csv": jobs}))
    assert sc.sites[0].tank == model.Tank(capacity_kwh=0)
    assert sc.initial_tank_kwh["pool-a"] == 0
    # A job no site can hold is the simulator's business (unschedulable), not an error.
    (huge,) = sc.jobs
    assert huge.resources.gpu == 64
    assert huge.deadline_s == scenario.parse_duration(scenario.DEFAULT_MAX_DELAY)


def test_csv_tolerates_blank_lines_whitespace_and_a_bom(tmp_path: Path) -> None:
    demand = "\ufeff t , heat \n\n 0 , 1 \n\n1800,3\n"
    jobs = f"{JOBS_HEADER}\n\n j , 0 , 60 , 1 , 1 , 0 , , , pool-a ; flats-b ; , \n"
    sc = scenario.load_scenario(
        write_scenario(tmp_path, files={"flats.csv": demand, "jobs.csv": jobs})
    )
    assert sc.demand["flats-b"].kw == (2.0, 6.0, 6.0, 6.0)
    (job,) = sc.jobs
    assert job.id == "j"
    assert job.allowed_sites == frozenset({"pool-a", "flats-b"})


def test_relative_paths_are_relative_to_the_scenario_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "data").mkdir()
    doc = base_document()
    doc["spec"]["jobs"]["csv"]["path"] = "data/jobs.csv"
    path = write_scenario(tmp_path, doc)
    (tmp_path / "jobs.csv").rename(tmp_path / "data" / "jobs.csv")
    monkeypatch.chdir(tmp_path.parent)
    sc = scenario.load_scenario(Path(tmp_path.name) / path.name)
    assert len(sc.jobs) == 3


# --- error messages ---------------------------------------------------------------------

Mutation = Callable[[dict[str, Any]], None]


def _set(path: str, value: Any) -> Mutation:
    """A mutation setting the field at a dotted path (list indexes as numbers)."""

    def apply(doc: dict[str, Any]) -> None:
        *parents, last = path.split(".")
        node: Any = doc
        for part in parents:
            node = node[int(part)] if part.isdigit() else node[part]
        node[int(last) if last.isdigit() else last] = value

    return apply


def _drop(path: str) -> Mutation:
    def apply(doc: dict[str, Any]) -> None:
        *parents, last = path.split(".")
        node: Any = doc
        for part in parents:
            node = node[int(part)] if part.isdigit() else node[part]
        del node[last]

    return apply


def _both(*mutations: Mutation) -> Mutation:
    def apply(doc: dict[str, Any]) -> None:
        for m in mutations:
            m(doc)

    return apply


SITE0 = "spec.sites.0"
SITE1 = "spec.sites.1"

YAML_ERRORS: list[tuple[str, Mutation, list[str]]] = [
    (
        "bad duration",
        _set("spec.duration", "15x"),
        ["scenario.yaml", "spec.duration", "'15x'", "expected a duration such as"],
    ),
    (
        "duration without a unit",
        _set("spec.step", 900),
        ["scenario.yaml", "spec.step", "expected a duration", "got 900"],
    ),
    (
        "negative duration",
        _set("spec.duration", "-2h"),
        ["spec.duration", "expected a duration between 1h and 8784h", "got '-2h'"],
    ),
    (
        "step does not divide the duration",
        _set("spec.step", "25m"),
        ["spec.step", "expected a step that divides spec.duration"],
    ),
    (
        "step longer than the duration",
        _set("spec.step", "3h"),
        ["spec.step", "no longer than spec.duration"],
    ),
    (
        "bad default max delay",
        _set("spec.defaultMaxDelay", "soon"),
        ["spec.defaultMaxDelay", "'soon'", "expected a duration"],
    ),
    (
        "initial energy above capacity",
        _set(f"{SITE1}.tank.initialKWh", 50),
        ["scenario.yaml", "spec.sites[1].tank.initialKWh", "expected at most capacityKWh (40)"],
    ),
    (
        "unknown field",
        _both(_drop(f"{SITE0}.tank.capacityKWh"), _set(f"{SITE0}.tank.capacityKwh", 40)),
        [
            "spec.sites[0].tank.capacityKwh: unknown field",
            "did you mean 'capacityKWh'?",
            "expected one of: capacityKWh, initialKWh, lossPerHour",
            "spec.sites[0].tank.capacityKWh: required field is missing",
        ],
    ),
    (
        "unknown top-level field",
        _set("status", {}),
        ["scenario.yaml", "status: unknown field", "expected one of: apiVersion, kind"],
    ),
    (
        "both csv and constantKW",
        _set(f"{SITE1}.offtaker.demand.constantKW", 4),
        ["spec.sites[1].offtaker.demand", "expected exactly one of csv or constantKW, got both"],
    ),
    (
        "neither csv nor constantKW",
        _set(f"{SITE0}.offtaker.demand", {}),
        ["spec.sites[0].offtaker.demand", "expected exactly one of csv or constantKW, got neither"],
    ),
    (
        "efficiency above 1",
        _set(f"{SITE0}.heatRecoveryEfficiency", 1.5),
        ["spec.sites[0].heatRecoveryEfficiency", "expected a number <= 1", "got 1.5"],
    ),
    (
        "efficiency zero",
        _set(f"{SITE0}.heatRecoveryEfficiency", 0),
        ["spec.sites[0].heatRecoveryEfficiency", "expected a number > 0"],
    ),
    (
        "not a number",
        _set(f"{SITE0}.capacity.cpu", "lots"),
        ["spec.sites[0].capacity.cpu", "expected a number", "got 'lots'"],
    ),
    (
        "NaN",
        _set(f"{SITE0}.power.idleWatts", float("nan")),
        ["spec.sites[0].power.idleWatts", "expected a finite number"],
    ),
    (
        "fractional GPUs",
        _set(f"{SITE0}.capacity.gpu", 1.5),
        ["spec.sites[0].capacity.gpu", "expected a whole number", "got 1.5"],
    ),
    (
        "loss of a whole tank an hour",
        _set(f"{SITE0}.tank.lossPerHour", 1),
        ["spec.sites[0].tank.lossPerHour", "expected a number < 1"],
    ),
    (
        "wrong apiVersion",
        _set("apiVersion", "heatshift.dev/v1"),
        ["scenario.yaml", "apiVersion", "expected 'heatshift.dev/v1alpha1'", "'heatshift.dev/v1'"],
    ),
    (
        "wrong kind",
        _set("kind", "LeafSite"),
        ["kind", "expected 'Scenario'", "got 'LeafSite'"],
    ),
    (
        "unknown offtaker kind",
        _set(f"{SITE0}.offtaker.kind", "sauna"),
        ["spec.sites[0].offtaker.kind", "'pool'", "'districtHeating'", "got 'sauna'"],
    ),
    (
        "duplicate site names",
        _set(f"{SITE1}.name", "pool-a"),
        ["spec.sites[1].name", "duplicate site name 'pool-a'", "expected unique names"],
    ),
    (
        "site name not a DNS label",
        _set(f"{SITE0}.name", "Pool_A"),
        ["spec.sites[0].name", "expected a lowercase DNS label", "got 'Pool_A'"],
    ),
    (
        "missing section",
        _drop(f"{SITE0}.capacity"),
        ["spec.sites[0].capacity", "required field is missing"],
    ),
    (
        "no sites",
        _set("spec.sites", []),
        ["spec.sites", "expected at least 1 item"],
    ),
    (
        "section of the wrong type",
        _set(f"{SITE0}.power", "lots"),
        ["spec.sites[0].power", "expected a mapping of fields", "got 'lots'"],
    ),
    (
        "GPUs without watts per GPU",
        _drop(f"{SITE0}.power.wattsPerGPU"),
        ["spec.sites[0].power.wattsPerGPU", "required field is missing (capacity.gpu is 8)"],
    ),
    (
        "negative scale",
        _set(f"{SITE1}.offtaker.demand.csv.scale", -1),
        ["spec.sites[1].offtaker.demand.csv.scale", "expected a number >= 0"],
    ),
    (
        "missing jobs file",
        _set("spec.jobs.csv.path", "nowhere.csv"),
        ["scenario.yaml", "spec.jobs.csv.path", "nowhere.csv not found", "expected a CSV file"],
    ),
    (
        "missing demand file",
        _set(f"{SITE1}.offtaker.demand.csv.path", "gone.csv"),
        ["scenario.yaml", "spec.sites[1].offtaker.demand.csv.path", "gone.csv not found"],
    ),
    (
        "demand column not in the file",
        _set(f"{SITE1}.offtaker.demand.csv.kwColumn", "kw"),
        ["flats.csv line 1", "expected a column 'kw'", "kwColumn", "found: t, heat"],
    ),
]


@pytest.mark.parametrize(
    ("mutate", "fragments"),
    [pytest.param(m, f, id=name) for name, m, f in YAML_ERRORS],
)
def test_scenario_file_errors(tmp_path: Path, mutate: Mutation, fragments: list[str]) -> None:
    doc = base_document()
    mutate(doc)
    path = write_scenario(tmp_path, doc)
    with pytest.raises(scenario.ScenarioError) as caught:
        scenario.load_scenario(path)
    message = str(caught.value)
    for fragment in fragments:
        assert fragment in message, f"{fragment!r} not in:\n{message}"
    assert isinstance(caught.value, ValueError)
    assert "pydantic" not in message and "For further information" not in message


CSV_ERRORS: list[tuple[str, str, str, list[str]]] = [
    (
        "non-numeric gpu",
        "jobs.csv",
        f"{JOBS_HEADER}\nok,0,60,1,1,0,,,,\nbad,0,60,1,1,two,,,,\n",
        ["jobs.csv line 3, column gpu", "expected a number", "got 'two'"],
    ),
    (
        "fractional gpu",
        "jobs.csv",
        f"{JOBS_HEADER}\nbad,0,60,1,1,1.5,,,,\n",
        ["jobs.csv line 2, column gpu", "expected a whole number", "got '1.5'"],
    ),
    (
        "duplicate job id",
        "jobs.csv",
        f"{JOBS_HEADER}\nj,0,60,1,1,0,,,,\nk,0,60,1,1,0,,,,\nj,5,60,1,1,0,,,,\n",
        ["jobs.csv line 4, column id", "duplicate job id 'j' (first on line 2)", "expected unique"],
    ),
    (
        "unknown site",
        "jobs.csv",
        f"{JOBS_HEADER}\nj,0,60,1,1,0,,,pool-a;nowhere,\n",
        [
            "jobs.csv line 2, column sites",
            "unknown site 'nowhere'",
            "expected ';'-separated names from: pool-a, flats-b",
        ],
    ),
    (
        "empty id",
        "jobs.csv",
        f"{JOBS_HEADER}\n,0,60,1,1,0,,,,\n",
        ["jobs.csv line 2, column id", "expected a job id"],
    ),
    (
        "negative submit time",
        "jobs.csv",
        f"{JOBS_HEADER}\nj,-5,60,1,1,0,,,,\n",
        ["jobs.csv line 2, column submit_s", "submit time in seconds, between 0s", "got '-5'"],
    ),
    (
        "zero duration",
        "jobs.csv",
        f"{JOBS_HEADER}\nj,0,0,1,1,0,,,,\n",
        [
            "jobs.csv line 2, column duration_s",
            "expected a job's expected duration in seconds, longer than 0s and at most 2160h",
        ],
    ),
    (
        "infinite power",
        "jobs.csv",
        f"{JOBS_HEADER}\nj,0,60,1,1,0,inf,,,\n",
        ["jobs.csv line 2, column power_watts", "expected a finite number"],
    ),
    (
        "negative max delay",
        "jobs.csv",
        f"{JOBS_HEADER}\nj,0,60,1,1,0,,-60,,\n",
        ["jobs.csv line 2, column max_delay_s", "maximum delay in seconds, between 0s and 720h"],
    ),
    (
        "fractional priority",
        "jobs.csv",
        f"{JOBS_HEADER}\nj,0,60,1,1,0,,,,1.5\n",
        ["jobs.csv line 2, column priority", "expected a whole number"],
    ),
    (
        "wrong number of fields",
        "jobs.csv",
        f"{JOBS_HEADER}\nj,0,60,1,1,0\n",
        ["jobs.csv line 2", "expected 10 fields", "got 6"],
    ),
    (
        "missing column",
        "jobs.csv",
        "id,submit_s,duration_s,cpu,memory_gib,gpu,power_watts,max_delay_s,sites\n",
        ["jobs.csv line 1", "expected the header id,submit_s,", "missing priority"],
    ),
    (
        "misspelt column",
        "jobs.csv",
        JOBS_HEADER.replace("max_delay_s", "max_delay") + "\n",
        ["jobs.csv line 1", "missing max_delay_s", "unknown max_delay"],
    ),
    (
        "empty jobs file",
        "jobs.csv",
        "",
        ["jobs.csv", "the file is empty; expected a header row"],
    ),
    (
        "negative kW",
        "flats.csv",
        "t,heat\n0,1\n900,-2\n",
        ["flats.csv line 3, column heat", "expected a number from 0 to 100,000", "got '-2'"],
    ),
    (
        "kW not a number",
        "flats.csv",
        "t,heat\n0,warm\n",
        ["flats.csv line 2, column heat", "expected a number", "got 'warm'"],
    ),
    (
        "kW NaN",
        "flats.csv",
        "t,heat\n0,nan\n",
        ["flats.csv line 2, column heat", "expected a finite number"],
    ),
    (
        "times not ascending",
        "flats.csv",
        "t,heat\n0,1\n900,2\n900,3\n",
        ["flats.csv line 4, column t", "expected times in ascending order", "on line 3"],
    ),
    (
        "negative time",
        "flats.csv",
        "t,heat\n-900,1\n",
        ["flats.csv line 2, column t", "expected a time from the start in seconds, between 0s"],
    ),
    (
        "no demand rows",
        "flats.csv",
        "t,heat\n",
        ["flats.csv", "expected at least one row of demand"],
    ),
    (
        "repeated column",
        "flats.csv",
        "t,heat,t\n0,1,2\n",
        ["flats.csv line 1", "column t appears twice"],
    ),
]


@pytest.mark.parametrize(
    ("file", "text", "fragments"),
    [pytest.param(f, t, fr, id=name) for name, f, t, fr in CSV_ERRORS],
)
def test_csv_errors(tmp_path: Path, file: str, text: str, fragments: list[str]) -> None:
    path = write_scenario(tmp_path, files={file: text})
    with pytest.raises(scenario.ScenarioError) as caught:
        scenario.load_scenario(path)
    message = str(caught.value)
    for fragment in fragments:
        assert fragment in message, f"{fragment!r} not in:\n{message}"


# --- hostile input (issue 13) ------------------------------------------------------------


def _load_error(path: Path) -> str:
    with pytest.raises(scenario.ScenarioError) as caught:
        scenario.load_scenario(path)
    return str(caught.value)


@pytest.mark.parametrize(
    ("field", "value", "expected"),
    [
        ("capacity.cpu", True, "expected a number, got True"),
        ("capacity.cpu", "16", "expected a number, got '16'"),
        ("capacity.gpu", False, "expected a whole number, got False"),
        ("capacity.gpu", "2", "expected a whole number, got '2'"),
        ("heatRecoveryEfficiency", "0.85", "expected a number, got '0.85'"),
        ("tank.capacityKWh", True, "expected a number, got True"),
    ],
)
def test_scenario_cpu_true_or_a_quoted_number_is_not_a_number(
    tmp_path: Path, field: str, value: object, expected: str
) -> None:
    doc = base_document()
    _set(f"{SITE0}.{field}", value)(doc)
    message = _load_error(write_scenario(tmp_path, doc))
    assert f"scenario.yaml: spec.sites[0].{field}: {expected}" in message
    assert message.count("\n") == 0


def test_scenario_integers_are_still_numbers(tmp_path: Path) -> None:
    # Strict numbers reject bools and strings, not a float field written as a whole number.
    sc = scenario.load_scenario(write_scenario(tmp_path))
    assert sc.sites[0].capacity.cpu == 64.0


@pytest.mark.parametrize("sites", [";;", ";", " ; ; "])
def test_scenario_sites_of_only_semicolons_is_an_error_not_any_site(
    tmp_path: Path, sites: str
) -> None:
    jobs = f"{JOBS_HEADER}\nj,0,60,1,1,0,,,{sites},\n"
    message = _load_error(write_scenario(tmp_path, files={"jobs.csv": jobs}))
    assert "jobs.csv line 2, column sites: expected ';'-separated site names" in message
    assert repr(sites.strip()) in message  # cells are stripped


def test_scenario_negative_job_duration_states_the_real_rule(tmp_path: Path) -> None:
    for text in ("-60", "0"):
        jobs = f"{JOBS_HEADER}\nj,0,{text},1,1,0,,,,\n"
        message = _load_error(write_scenario(tmp_path, files={"jobs.csv": jobs}))
        assert "longer than 0s" in message
        assert ">= 0" not in message


@pytest.mark.parametrize(
    ("mutate", "fragments"),
    [
        pytest.param(
            _set("spec.duration", "9000h"),
            ["spec.duration", "expected a duration between 1h and 8784h, got '9000h'"],
            id="scenario longer than a year",
        ),
        pytest.param(
            _set("spec.step", "1ms"),
            ["spec.step", "expected a duration between 1m and 24h, got '1ms'"],
            id="1 ms step",
        ),
        pytest.param(
            lambda d: d["spec"].update(duration="169h", step="1m"),
            ["spec.step", "expected at most 10,080 steps", "got 10,140 of 1m"],
            id="too many steps",
        ),
        pytest.param(
            _set("spec.defaultMaxDelay", "721h"),
            ["spec.defaultMaxDelay", "between 0s and 720h"],
            id="default delay over 30 days",
        ),
        pytest.param(
            _set(f"{SITE0}.power.wattsPerGPU", 1e9),
            ["spec.sites[0].power.wattsPerGPU", "expected a number <= 100,000,000"],
            id="gigawatt GPU",
        ),
        pytest.param(
            _set(f"{SITE0}.tank.capacityKWh", 1e7),
            ["spec.sites[0].tank.capacityKWh", "expected a number <= 1,000,000"],
            id="huge tank",
        ),
        pytest.param(
            _set(f"{SITE0}.offtaker.maxThermalKW", 1e6),
            ["spec.sites[0].offtaker.maxThermalKW", "expected a number <= 100,000"],
            id="huge offtaker",
        ),
        pytest.param(
            _set(f"{SITE0}.offtaker.demand.constantKW", 1e6),
            ["spec.sites[0].offtaker.demand.constantKW", "expected a number <= 100,000"],
            id="huge constant demand",
        ),
        pytest.param(
            _set(f"{SITE1}.offtaker.demand.csv.scale", 1e300),
            ["flats.csv line 2, column heat", "at most 100,000 kW after scaling by 1e+300"],
            id="demand scaled past the bound",
        ),
        pytest.param(
            _set(f"{SITE0}.capacity.gpu", 10**6),
            ["spec.sites[0].capacity.gpu", "expected a number <= 100,000"],
            id="a million GPUs",
        ),
    ],
)
def test_scenario_values_beyond_their_bounds_are_errors(
    tmp_path: Path, mutate: Mutation, fragments: list[str]
) -> None:
    doc = base_document()
    mutate(doc)
    message = _load_error(write_scenario(tmp_path, doc))
    for fragment in fragments:
        assert fragment in message, f"{fragment!r} not in:\n{message}"


@pytest.mark.parametrize(
    ("row", "fragments"),
    [
        ("j,0,7776001,1,1,0,,,,", ["column duration_s", "at most 2160h", "'7776001'"]),
        ("j,0,60,1,1,0,,2592001,,", ["column max_delay_s", "between 0s and 720h"]),
        ("j,1e300,60,1,1,0,,,,", ["column submit_s", "between 0s and 8784h"]),
        ("j,0,60,1,1,0,2000000,,,", ["column power_watts", "from 0 to 1,000,000"]),
        ("j,0,60,2000000,1,0,,,,", ["column cpu", "from 0 to 1,000,000"]),
        ("j,0,60,1,1e9,0,,,,", ["column memory_gib", "from 0 to 100,000,000"]),
        ("j,0,60,1,1,200000,,,,", ["column gpu", "from 0 to 100,000"]),
        ("j,0,60,1,1,0,,,,11", ["column priority", "from 0 to 10"]),
        ("j,0,nan,1,1,0,,,,", ["column duration_s", "longer than 0s"]),
    ],
)
def test_scenario_job_values_beyond_their_bounds_are_errors(
    tmp_path: Path, row: str, fragments: list[str]
) -> None:
    message = _load_error(write_scenario(tmp_path, files={"jobs.csv": f"{JOBS_HEADER}\n{row}\n"}))
    for fragment in fragments:
        assert fragment in message, f"{fragment!r} not in:\n{message}"


def test_scenario_demand_time_beyond_a_year_is_an_error(tmp_path: Path) -> None:
    message = _load_error(write_scenario(tmp_path, files={"flats.csv": "t,heat\n0,1\n1e12,2\n"}))
    assert "flats.csv line 3, column t: expected a time from the start in seconds" in message


def test_scenario_csv_with_too_many_rows_is_an_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(bounds, "MAX_CSV_ROWS", 3)
    jobs = f"{JOBS_HEADER}\n" + "".join(f"j{i},0,60,1,1,0,,,,\n" for i in range(4))
    message = _load_error(write_scenario(tmp_path, files={"jobs.csv": jobs}))
    assert "jobs.csv line 5: expected at most 3 rows after the header" in message


RAW_ERRORS: list[tuple[str, str, list[str]]] = [
    ("invalid YAML", "spec: [1,\n", ["scenario.yaml line 2", "expected valid YAML"]),
    (
        "a key twice",
        "kind: Scenario\nkind: Scenario\n",
        ["scenario.yaml line 2", "found the key 'kind' twice (first on line 1)"],
    ),
    ("not a mapping", "- a\n- b\n", ["scenario.yaml", "expected a mapping with apiVersion"]),
    ("empty file", "", ["scenario.yaml", "expected a mapping with apiVersion"]),
]


@pytest.mark.parametrize(
    ("text", "fragments"), [pytest.param(t, f, id=name) for name, t, f in RAW_ERRORS]
)
def test_unreadable_scenario_files(tmp_path: Path, text: str, fragments: list[str]) -> None:
    path = tmp_path / "scenario.yaml"
    path.write_text(text)
    with pytest.raises(scenario.ScenarioError) as caught:
        scenario.load_scenario(path)
    for fragment in fragments:
        assert fragment in str(caught.value)


def test_missing_scenario_file(tmp_path: Path) -> None:
    with pytest.raises(scenario.ScenarioError, match=r"nope\.yaml: scenario file not found"):
        scenario.load_scenario(tmp_path / "nope.yaml")


def test_every_problem_is_reported_once_a_line(tmp_path: Path) -> None:
    jobs = f"{JOBS_HEADER}\na,0,60,1,1,x,,,,\nb,0,60,1,1,y,,,,\n"
    doc = base_document()
    doc["spec"]["sites"][1]["offtaker"]["demand"]["csv"]["path"] = "gone.csv"
    with pytest.raises(scenario.ScenarioError) as caught:
        scenario.load_scenario(write_scenario(tmp_path, doc, {"jobs.csv": jobs}))
    problems = caught.value.problems
    assert len(problems) == 3
    assert "gone.csv not found" in problems[0]
    assert "line 2, column gpu" in problems[1]
    assert "line 3, column gpu" in problems[2]
    assert str(caught.value) == "\n".join(problems)


def test_a_long_list_of_problems_is_cut_short(tmp_path: Path) -> None:
    rows = "".join(f"j{i},0,60,1,1,x,,,,\n" for i in range(50))
    with pytest.raises(scenario.ScenarioError) as caught:
        scenario.load_scenario(
            write_scenario(tmp_path, files={"jobs.csv": f"{JOBS_HEADER}\n{rows}"})
        )
    assert len(caught.value.problems) == 50
    lines = str(caught.value).splitlines()
    assert len(lines) == scenario.MAX_REPORTED_PROBLEMS + 1
    assert lines[-1] == f"... and {50 - scenario.MAX_REPORTED_PROBLEMS} more problems"


def test_scenario_error_keeps_a_single_message() -> None:
    err = scenario.ScenarioError("f.yaml: spec: broken")
    assert err.problems == ("f.yaml: spec: broken",)
    assert str(err) == "f.yaml: spec: broken"


# --- durations --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "seconds"),
    [
        ("15m", 900.0),
        ("6h", 21600.0),
        ("168h", 604800.0),
        ("1h30m", 5400.0),
        ("90s", 90.0),
        ("1.5h", 5400.0),
        ("500ms", 0.5),
        ("0", 0.0),
        (" 2h ", 7200.0),
    ],
)
def test_parse_duration(text: str, seconds: float) -> None:
    assert scenario.parse_duration(text) == pytest.approx(seconds)


@pytest.mark.parametrize("text", ["15x", "", "15", "h", "1h30", "one hour", "1d"])
def test_parse_duration_rejects(text: str) -> None:
    with pytest.raises(ValueError, match="expected a duration such as 90s, 15m, 6h or 1h30m"):
        scenario.parse_duration(text)


# --- step averaging ---------------------------------------------------------------------


@given(
    gaps=st.lists(st.integers(min_value=1, max_value=5000), min_size=1, max_size=30),
    offset=st.integers(min_value=0, max_value=3000),
    values=st.lists(st.floats(min_value=0, max_value=1e4), min_size=30, max_size=30),
    step=st.sampled_from([60.0, 900.0, 1800.0, 3600.0]),
    steps=st.integers(min_value=1, max_value=40),
)
def test_step_means_conserve_energy(
    gaps: list[int], offset: int, values: list[float], step: float, steps: int
) -> None:
    times = [float(offset)]
    for gap in gaps[1:]:
        times.append(times[-1] + gap)
    vals = values[: len(times)]
    means = scenario._step_means(times, vals, step, steps)
    assert len(means) == steps

    def held(t: float) -> float:
        k = max(i for i, start in enumerate(times) if start <= t) if t >= times[0] else 0
        return vals[k]

    # The energy over the horizon matches the step-held series', and no mean leaves its range.
    edges = sorted({0.0, steps * step, *(t for t in times if t < steps * step)})
    energy = sum(held(a) * (b - a) for a, b in itertools.pairwise(edges))
    assert sum(m * step for m in means) == pytest.approx(energy, rel=1e-9, abs=1e-6)
    for i, m in enumerate(means):
        inside = [held(i * step)] + [held(t) for t in times if i * step < t < (i + 1) * step]
        assert min(inside) - 1e-9 <= m <= max(inside) + 1e-9
