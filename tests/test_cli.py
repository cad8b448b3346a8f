"""The ``heatshift`` command: simulate (table, JSON, plot, errors) and bench planner.

Runs :func:`heatshift.cli.main` in-process on tiny scenario files written to tmp_path.
"""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from heatshift import bench, cli, model
from heatshift.planner import policies
from heatshift.sim import engine, report
from heatshift.sim import scenario as scenario_mod

import builders

SCENARIO = """\
apiVersion: heatshift.dev/v1alpha1
kind: Scenario
metadata:
  name: tiny
spec:
  duration: 2h
  step: 15m
  defaultMaxDelay: 1h
  sites:
  - name: pool
    capacity: {cpu: 32, memoryGiB: 128, gpu: 4}
    power: {idleWatts: 300, wattsPerGPU: 500, wattsPerCPU: 8}
    heatRecoveryEfficiency: 0.85
    tank: {capacityKWh: 10, initialKWh: 5, lossPerHour: 0.01}
    offtaker:
      kind: pool
      maxThermalKW: 20
      demand: {csv: {path: pool.csv}}
  - name: flats
    capacity: {cpu: 32, memoryGiB: 128, gpu: 2}
    power: {idleWatts: 200, wattsPerGPU: 500, wattsPerCPU: 8}
    heatRecoveryEfficiency: 0.8
    tank: {capacityKWh: 5}
    offtaker:
      kind: residential
      maxThermalKW: 10
      demand: {constantKW: 2}
  jobs:
    csv: {path: jobs.csv}
"""

DEMAND = "t_s,kw\n0,1.5\n1800,3\n3600,0.5\n"

JOBS = """\
id,submit_s,duration_s,cpu,memory_gib,gpu,power_watts,max_delay_s,sites,priority
a,0,1800,8,32,1,,,,1
b,0,3600,8,32,2,,3600,,0
c,600,900,4,16,0,,,flats,2
d,1200,1800,8,32,1,400,1800,,1
huge,1500,600,8,32,16,,,,1
"""


@pytest.fixture
def scenario_file(tmp_path: Path) -> Path:
    (tmp_path / "pool.csv").write_text(DEMAND)
    (tmp_path / "jobs.csv").write_text(JOBS)
    path = tmp_path / "scenario.yaml"
    path.write_text(SCENARIO)
    return path


# --- simulate -------------------------------------------------------------------------


def test_simulate_json_reports_every_policy(
    scenario_file: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    status = cli.main(
        ["simulate", "--scenario", str(scenario_file), "--policy", "default", "greedy", "--json"]
    )
    out, err = capsys.readouterr()
    assert status == 0
    doc = json.loads(out)
    assert doc["scenario"] == "tiny"
    assert [r["policy"] for r in doc["results"]] == ["default", "greedy"]
    for metrics in doc["results"]:
        assert list(metrics) == [*builders.SIMULATE_RESULT_KEYS, "sites"]
        fleet_fuel = sum(s["fuel_avoided_kwh"] for s in metrics["sites"].values())
        assert metrics["fuel_avoided_kwh"] == pytest.approx(fleet_fuel)
        # Every site backs up with gas by default: all heat delivered / 0.9, x 0.202 kg/kWh.
        assert fleet_fuel == pytest.approx(metrics["useful_heat_kwh"] / 0.9)
        assert metrics["co2_avoided_kg"] == pytest.approx(fleet_fuel * 0.202)
        assert metrics["jobs_total"] == 5
        assert metrics["jobs_unschedulable"] == 1
        # 1.5 kW for 30 min, 3 kW for 30 min, then 0.5 kW; plus 2 kW for 2 h.
        assert metrics["demand_kwh"] == pytest.approx(0.75 + 1.5 + 0.5 + 4.0)
    # The limit on useful heat, beside the results: no deadline-meeting run beats it.
    assert doc["bound_useful_heat_kwh"] >= max(
        m["useful_heat_kwh"] for m in doc["results"] if m["deadline_misses"] == 0
    )
    # Progress went to stderr, one line per tenth and policy (not a terminal here).
    assert err.count("tiny / default:") == 10
    assert "100%" in err


def test_simulate_in_parallel_gives_the_same_numbers(
    scenario_file: Path, capfd: pytest.CaptureFixture[str]
) -> None:
    # capfd: the worker processes write their progress to the same file descriptor.
    def run(*extra: str) -> tuple[dict[str, Any], str]:
        argv = ["simulate", "--scenario", str(scenario_file), "--json", *extra]
        assert cli.main(argv) == 0
        out, err = capfd.readouterr()
        doc: dict[str, Any] = json.loads(out)
        for metrics in doc["results"]:  # wall times: the only figures that may differ
            for key in [k for k in metrics if k.startswith("plan_seconds")]:
                del metrics[key]
        return doc, err

    alone, _ = run()
    side_by_side, err = run("--parallel", "3")
    assert [r["policy"] for r in side_by_side["results"]] == list(policies.POLICY_NAMES)
    assert side_by_side == alone
    # Each process still reports its progress, a line per tenth, and the bound's line.
    for name in policies.POLICY_NAMES:
        assert err.count(f"tiny / {name}:") == 10
    assert "tiny / bound: optimal" in err


def test_simulate_runs_the_production_planner(
    scenario_file: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    status = cli.main(
        ["simulate", "--scenario", str(scenario_file), "--policy", "heatshift", "--json"]
    )
    assert status == 0
    (result,) = json.loads(capsys.readouterr().out)["results"]
    assert result["policy"] == "heatshift"
    assert result["deadline_misses"] == 0


def test_simulate_prints_an_aligned_table_with_units(
    scenario_file: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    status = cli.main(
        ["simulate", "--scenario", str(scenario_file), "--policy", "default", "--policy", "greedy"]
    )
    assert status == 0
    title, header, *rows, note = capsys.readouterr().out.splitlines()
    assert title == "scenario tiny"
    for unit in ("useful kWh", "dumped kWh", "boiler kWh", "reuse %", "plan p50 s"):
        assert unit in header
    assert [row.split()[0] for row in rows] == ["default", "greedy", "bound"]
    # The limit: at least what any policy that missed no deadline delivered; no other figures.
    useful = [float(row.split()[1].replace(",", "")) for row in rows]
    assert useful[2] >= max(useful[:2])
    assert set(rows[2].split()[2:]) == {"-"}
    # The pool's tank starts with 5 kWh: delivered, but not counted as reuse.
    assert note == (
        "note: useful kWh includes the 5.0 kWh the tanks held at the start; "
        "reuse % counts only heat recovered in the run"
    )
    assert len({len(row) for row in [header, *rows]}) == 1  # right-aligned columns


def test_simulate_replan_every_is_passed_on(
    scenario_file: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    seen: list[float | None] = []
    real = engine.simulate

    def spy(*args: object, replan_every_s: float | None = None, **kw: object) -> object:
        seen.append(replan_every_s)
        return real(*args, replan_every_s=replan_every_s, **kw)  # type: ignore[arg-type]

    monkeypatch.setattr(engine, "simulate", spy)
    argv = ["simulate", "--scenario", str(scenario_file), "--policy", "greedy"]
    assert cli.main([*argv, "--replan-every", "30m"]) == 0
    assert seen == [1800.0]
    capsys.readouterr()


def test_simulate_plot_writes_a_png(
    scenario_file: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    png = tmp_path / "out.png"
    argv = ["simulate", "--scenario", str(scenario_file), "--policy", "default", "greedy"]
    assert cli.main([*argv, "--plot", str(png)]) == 0
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert str(png) in capsys.readouterr().err


@pytest.mark.parametrize(
    ("breakage", "expected"),
    [
        (lambda text: text.replace("step: 15m", "step: fifteen"), "spec.step"),
        (lambda text: text.replace("maxThermalKW: 20", "maxThermalKW: -1"), "maxThermalKW"),
        (lambda text: text.replace("path: jobs.csv", "path: missing.csv"), "missing.csv"),
        (lambda text: "spec: [not, a, mapping", "YAML"),
    ],
    ids=["bad-duration", "negative-rating", "missing-csv", "bad-yaml"],
)
def test_a_broken_scenario_is_a_one_line_error_and_exit_2(
    scenario_file: Path,
    capsys: pytest.CaptureFixture[str],
    breakage: Callable[[str], str],
    expected: str,
) -> None:
    scenario_file.write_text(breakage(SCENARIO))
    status = cli.main(["simulate", "--scenario", str(scenario_file), "--policy", "default"])
    out, err = capsys.readouterr()
    assert status == 2
    assert out == ""
    assert err.startswith("heatshift simulate: error: ")
    assert expected in err
    assert err.count("\n") == 1
    assert "Traceback" not in err


def test_a_missing_scenario_file_is_exit_2(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    status = cli.main(["simulate", "--scenario", str(tmp_path / "nope.yaml")])
    assert status == 2
    assert "nope.yaml" in capsys.readouterr().err


@pytest.mark.parametrize(
    "argv",
    [
        ["simulate", "--policy", "clairvoyant"],
        ["simulate", "--replan-every", "soon"],
        ["simulate", "--replan-every", "0s"],
        ["bench", "planner", "--jobs", "10"],
        ["bench", "planner", "--jobs", "10", "--sites", "0"],
        [],
    ],
)
def test_bad_arguments_exit_2(argv: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_info:
        cli.main(argv)
    assert exit_info.value.code == 2
    assert capsys.readouterr().err


# --- hostile arguments (issue 13): one line, exit 2, before any run -------------------


@pytest.fixture
def no_run(monkeypatch: pytest.MonkeyPatch) -> None:
    """Any simulation or plan starting fails the test: bad input must stop before."""

    def refuse(*_: object, **__: object) -> object:
        raise AssertionError("a run started on bad input")

    monkeypatch.setattr(engine, "simulate", refuse)
    monkeypatch.setattr(bench, "generate_snapshot", refuse)


def _usage_error(argv: list[str], capsys: pytest.CaptureFixture[str]) -> str:
    with pytest.raises(SystemExit) as exit_info:
        cli.main(argv)
    out, err = capsys.readouterr()
    assert exit_info.value.code == 2
    assert out == ""
    assert err.count("\n") == 1, err  # one line, no usage block, no traceback
    assert "Traceback" not in err
    return err


@pytest.mark.usefixtures("no_run")
def test_simulate_horizon_1ns_is_a_one_line_error(
    scenario_file: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    argv = ["simulate", "--scenario", str(scenario_file), "--policy", "heatshift"]
    err = _usage_error([*argv, "--horizon", "1ns"], capsys)
    assert err.startswith("heatshift simulate: error: argument --horizon: ")
    assert "the planning horizon must be between 5m and 168h, got '1ns'" in err
    err = _usage_error([*argv, "--horizon", "2000000h"], capsys)
    assert "between 5m and 168h, got '2000000h'" in err


@pytest.mark.usefixtures("no_run")
@pytest.mark.parametrize(
    ("argv", "expected"),
    [
        (
            ["bench", "planner", "--jobs", "10", "--sites", "2", "--step", "1ms"],
            "argument --step: the planning step must be between 1m and 24h, got '1ms'",
        ),
        (
            ["simulate", "--replan-every", "1ms"],
            "argument --replan-every: the re-plan interval must be between 10s and 24h",
        ),
        (
            ["bench", "planner", "--jobs", "10", "--sites", "2", "--horizon", "200h"],
            "argument --horizon: the planning horizon must be between 5m and 168h",
        ),
        (
            ["bench", "planner", "--jobs", "10", "--sites", "2", "--horizon", "99999999h"],
            "longer than Go's limit of 2562047h; expected a duration like 15m",
        ),
        (
            ["bench", "planner", "--jobs", "10", "--sites", "2", "--time-limit", "1h"],
            "argument --time-limit: the solver time limit must be longer than 0s and at most 5m",
        ),
        (
            ["bench", "planner", "--jobs", "10", "--sites", "2", "--time-limit", "0s"],
            "longer than 0s",
        ),
        (
            ["bench", "planner", "--jobs", "10000000", "--sites", "2"],
            "argument --jobs: expected a number <= 1,000,000",
        ),
        (
            ["bench", "planner", "--jobs", "10", "--sites", "2", "--repeat", "1000000"],
            "argument --repeat: expected a number <= 1,000",
        ),
        (
            ["bench", "planner", "--jobs", "10", "--sites", "2", "--seed", str(2**40)],
            "argument --seed: expected a number <= 2,147,483,647",
        ),
        (["simulate", "--horizon", "soon"], "expected a duration like 15m"),
    ],
    ids=[
        "bench-step-1ms",
        "replan-1ms",
        "bench-horizon",
        "bench-horizon-past-int64",
        "time-limit-1h",
        "time-limit-0",
        "jobs",
        "repeat",
        "seed",
        "not-a-duration",
    ],
)
def test_simulate_1ms_step_and_other_durations_out_of_range_are_one_line_errors(
    argv: list[str], expected: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert expected in _usage_error(argv, capsys)


@pytest.mark.usefixtures("no_run")
def test_simulate_scenario_step_1ms_is_a_one_line_error(
    scenario_file: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    scenario_file.write_text(SCENARIO.replace("step: 15m", "step: 1ms"))
    status = cli.main(["simulate", "--scenario", str(scenario_file)])
    err = capsys.readouterr().err
    assert status == 2
    assert "spec.step: expected a duration between 1m and 24h, got '1ms'" in err
    assert err.count("\n") == 1


@pytest.mark.usefixtures("no_run")
def test_simulate_replan_every_rounded_past_the_step_bound_is_a_one_line_error(
    scenario_file: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # 24h is a valid interval, but in whole 7h scenario steps it is 28h: too long a step.
    scenario_file.write_text(
        SCENARIO.replace("duration: 2h", "duration: 28h").replace("step: 15m", "step: 7h")
    )
    argv = ["simulate", "--scenario", str(scenario_file), "--replan-every", "24h"]
    status = cli.main(argv)
    err = capsys.readouterr().err
    assert status == 2
    assert err.startswith("heatshift simulate: error: the planning step must be between")
    assert "not 28h" in err and "whole 7h scenario steps" in err
    assert err.count("\n") == 1


@pytest.mark.usefixtures("no_run")
@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("out.txt", "expected a file name ending in one of .pdf, .png, .svg, got "),
        ("noext", "expected a file name ending in one of .pdf, .png, .svg, got "),
        ("missing/out.png", "does not exist"),
        ("adir.png", "expected a file, got the directory"),
    ],
    ids=["txt", "noext", "missing-directory", "a-directory"],
)
def test_simulate_plot_path_problems_are_one_line_errors_before_the_run(
    scenario_file: Path,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    name: str,
    expected: str,
) -> None:
    (tmp_path / "adir.png").mkdir()
    target = tmp_path / name
    argv = ["simulate", "--scenario", str(scenario_file), "--plot", str(target)]
    err = _usage_error(argv, capsys)
    assert err.startswith("heatshift simulate: error: argument --plot: ")
    assert expected in err
    # Nothing written under this name or another (``noext`` used to become ``noext.png``).
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(
        ["adir.png", "jobs.csv", "pool.csv", "scenario.yaml"]
    )


@pytest.mark.usefixtures("no_run")
def test_simulate_plot_in_a_read_only_directory_is_refused(
    scenario_file: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    # The permission test as the kernel would answer it for a user without write access
    # (tests may run as root, who can write anywhere).
    monkeypatch.setattr(os, "access", lambda path, mode: not mode & os.W_OK)
    argv = ["simulate", "--scenario", str(scenario_file), "--plot", str(tmp_path / "p.png")]
    assert "permission denied" in _usage_error(argv, capsys)


@pytest.mark.parametrize("suffix", [".svg", ".pdf", ".PNG"])
def test_simulate_plot_writes_svg_and_pdf_under_the_name_given(
    scenario_file: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str], suffix: str
) -> None:
    target = tmp_path / f"out{suffix}"
    argv = ["simulate", "--scenario", str(scenario_file), "--policy", "default"]
    assert cli.main([*argv, "--plot", str(target)]) == 0
    head = target.read_bytes()[:8]
    assert {".svg": b"<?xml", ".pdf": b"%PDF", ".PNG": b"\x89PNG"}[suffix] in head
    assert f"plot written to {target}" in capsys.readouterr().err


def test_simulate_plot_that_cannot_be_written_at_the_end_is_one_line(
    scenario_file: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    def full_disk(*_: object, **__: object) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(report, "plot", full_disk)
    argv = ["simulate", "--scenario", str(scenario_file), "--policy", "default", "--json"]
    assert cli.main([*argv, "--plot", str(tmp_path / "p.png")]) == 1
    out, err = capsys.readouterr()
    assert json.loads(out)["results"]  # the numbers are not lost
    assert err.splitlines()[-1].endswith(
        "cannot write the plot to " + str(tmp_path / "p.png") + ": No space left on device"
    )


# --- bench planner --------------------------------------------------------------------


def test_bench_planner_json_parses(capsys: pytest.CaptureFixture[str]) -> None:
    argv = ["bench", "planner", "--jobs", "50", "--sites", "3", "--repeat", "1", "--json"]
    assert cli.main(argv) == 0
    doc = json.loads(capsys.readouterr().out)
    assert doc["jobs"] == 50
    assert doc["sites"] == 3
    assert doc["repeat"] == 1
    assert len(doc["plan_seconds"]) == 1
    assert doc["plan_seconds_max"] >= doc["plan_seconds_p50"] > 0
    assert doc["status"] in {s.value for s in model.SolveStatus}
    assert 0 <= doc["placements_now"] <= doc["placements"] <= 50
    assert all(isinstance(note, str) for note in doc["notes"])
    assert doc["bound_status"] == "optimal"
    assert 0 < doc["fraction_of_bound"] <= 1 + 1e-9
    assert doc["bound_useful_heat_kwh"] > 0


def test_bench_planner_says_how_a_large_snapshot_was_planned(
    capsys: pytest.CaptureFixture[str],
) -> None:
    argv = ["bench", "planner", "--jobs", "400", "--sites", "8", "--repeat", "1"]
    assert cli.main(argv) == 0
    out = capsys.readouterr().out
    assert "solver status  heuristic" in out
    assert "note           heat-seeking list schedule without the solver" in out


def test_bench_planner_prints_its_numbers(capsys: pytest.CaptureFixture[str]) -> None:
    argv = ["bench", "planner", "--jobs", "5", "--sites", "2", "--repeat", "2"]
    assert cli.main([*argv, "--time-limit", "1s", "--horizon", "6h"]) == 0
    out = capsys.readouterr().out
    assert "5 pending jobs, 2 sites" in out
    assert "horizon 6h" in out
    for word in ("p50", "max", "solver status", "objective", "starting now"):
        assert word in out


def test_generated_snapshots_are_seeded_and_realistic() -> None:
    snap = bench.generate_snapshot(400, 5, seed=7)
    assert snap == bench.generate_snapshot(400, 5, seed=7)
    assert snap != bench.generate_snapshot(400, 5, seed=8)
    assert len(snap.pending) == 400 and len(snap.sites) == 5
    assert len({j.id for j in snap.pending}) == 400
    gpus = {j.resources.gpu for j in snap.pending}
    assert gpus == {0, 1, 2, 4, 8}
    durations = [j.duration_s for j in snap.pending]
    assert min(durations) >= 600 and max(durations) <= 86400
    for j in snap.pending:
        assert j.release_s <= snap.now_s
        assert snap.now_s + 3600 <= j.deadline_s <= snap.now_s + 86400
        assert 0 <= j.priority <= 3
        assert engine.fits_somewhere(j, snap.sites)
    limited = sum(1 for j in snap.pending if j.allowed_sites is not None)
    assert 0.05 * 400 <= limited <= 0.15 * 400
    assert snap.running
    for site in snap.sites:
        on_site = [r for r in snap.running if r.site == site.name]
        total = model.Resources()
        for r in on_site:
            total = total.plus(r.resources)
        assert total.fits_within(site.capacity)
        state = snap.states[site.name]
        assert state.demand_history is not None
        assert state.demand_history.end_s == snap.now_s
        assert 0 <= state.tank_energy_kwh <= site.tank.capacity_kwh


# --- report ---------------------------------------------------------------------------


def test_simulate_repeats_its_numbers_beside_a_busy_process(
    scenario_file: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    argv = ["simulate", "--scenario", str(scenario_file), "--json", "--no-bound"]
    argv += ["--policy", "heatshift", "oracle"]

    def numbers() -> list[dict[str, object]]:
        assert cli.main(argv) == 0
        results = json.loads(capsys.readouterr().out)["results"]
        return [{k: v for k, v in r.items() if not k.startswith("plan_seconds")} for r in results]

    idle = numbers()
    burner = subprocess.Popen([sys.executable, "-c", "while True: pass"])
    try:
        busy = numbers()
    finally:
        burner.kill()
        burner.wait()
    assert busy == idle


def test_json_report_names_the_scenario_once(scenario_file: Path) -> None:
    scenario = scenario_mod.load_scenario(scenario_file)
    result = engine.simulate(scenario, policies.make_policy("default"))
    doc = report.as_json([result])
    assert doc == {
        "scenario": "tiny",
        "results": [{**result.metrics(), "sites": result.site_ledger()}],
    }
    json.dumps(doc)  # serialisable as is


class _Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_progress_on_a_terminal_is_one_line_rewritten_in_place(
    scenario_file: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    terminal = _Terminal()
    monkeypatch.setattr(sys, "stderr", terminal)
    argv = ["simulate", "--scenario", str(scenario_file), "--policy", "default", "--json"]
    assert cli.main([*argv, "--no-bound"]) == 0
    assert "bound_useful_heat_kwh" not in json.loads(capsys.readouterr().out)
    written = terminal.getvalue()
    assert written.count("\n") == 1
    assert written.count("\r") == 8  # one per step
    assert "100.0%" in written


def test_report_prints_what_simulate_json_computed(
    scenario_file: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert (
        cli.main(["simulate", "--scenario", str(scenario_file), "--policy", "greedy", "--json"])
        == 0
    )
    simulated = json.loads(capsys.readouterr().out)
    path = tmp_path / "sim.json"
    path.write_text(json.dumps(simulated))
    assert cli.main(["report", "--simulation", str(path), "--format", "json"]) == 0
    reported = json.loads(capsys.readouterr().out)
    (fleet,) = reported["fleet"]
    result = simulated["results"][0]
    assert fleet["fuel_avoided_kwh"] == pytest.approx(result["fuel_avoided_kwh"])
    assert fleet["co2_avoided_kg"] == pytest.approx(result["co2_avoided_kg"])
    assert fleet["it_energy_kwh"] == pytest.approx(result["it_energy_kwh"])
