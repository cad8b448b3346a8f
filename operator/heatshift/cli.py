"""The ``heatshift`` command: one function per subcommand, argparse for the wiring.

``heatshift simulate`` replays a scenario through the policies and reports (table, JSON,
plot); ``heatshift bench planner`` times the production planner on a generated snapshot.
The operator's own subcommands (``run``, ``plan``, ``metering-sim``) join here later.
Called by the console script and ``python -m heatshift``. Output goes to stdout,
progress and errors to stderr; exit status 2 means the input was wrong.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TextIO

from heatshift import bench, durations
from heatshift.metering import server as metering_server
from heatshift.planner import config as planner_config
from heatshift.planner import policies
from heatshift.sim import engine, report
from heatshift.sim import scenario as scenario_mod

EXIT_OK = 0
EXIT_USAGE = 2
"""Bad input (arguments, scenario file): the same status argparse uses."""


def _duration(text: str) -> float:
    """argparse type: a positive Go-style duration (``15m``, ``1h30m``) in seconds."""
    try:
        seconds = durations.parse_duration(text)
    except durations.DurationError:
        raise argparse.ArgumentTypeError(
            f"expected a duration like 15m, 2s or 1h30m, got {text!r}"
        ) from None
    if seconds <= 0:
        raise argparse.ArgumentTypeError(f"expected a positive duration, got {text!r}")
    return seconds


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a number >= 1, got {text!r}")
    return value


def _count(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"expected a number >= 0, got {text!r}")
    return value


class _Progress:
    """Progress of one simulation on stderr.

    On a terminal a single line rewritten in place; otherwise (CI logs, pipes) one line
    per tenth done, so logs stay short.
    """

    def __init__(self, stream: TextIO, label: str) -> None:
        self.stream = stream
        self.label = label
        self.tty = stream.isatty()
        self.next_tenth = 1
        self.started = time.perf_counter()

    def __call__(self, fraction: float) -> None:
        if self.tty:
            self.stream.write(f"\r{self.label}: {fraction:6.1%}")
            if fraction >= 1.0:
                self.stream.write(f" in {time.perf_counter() - self.started:.1f}s\n")
            self.stream.flush()
            return
        while fraction >= self.next_tenth / 10 - 1e-9 and self.next_tenth <= 10:
            elapsed = time.perf_counter() - self.started
            self.stream.write(f"{self.label}: {self.next_tenth * 10:3d}% ({elapsed:.1f}s)\n")
            self.next_tenth += 1
        self.stream.flush()


def _simulate(args: argparse.Namespace) -> int:
    """``heatshift simulate``: replay a scenario through each policy and report."""
    try:
        if args.scenario is None:
            scenario = scenario_mod.load_builtin_scenario()
        else:
            scenario = scenario_mod.load_scenario(args.scenario)
    except scenario_mod.ScenarioError as err:
        sys.stderr.write(f"heatshift simulate: error: {err}\n")
        return EXIT_USAGE
    names: list[str] = list(dict.fromkeys(args.policy or policies.POLICY_NAMES))
    # The planner remakes its plan at the simulator's decision interval (a whole number
    # of scenario steps), and a foresight policy sees as far as the planner plans.
    every_steps = max(1, -(-(args.replan_every or scenario.step_s) // scenario.step_s))
    cfg = planner_config.PlannerConfig(step_s=every_steps * scenario.step_s, horizon_s=args.horizon)
    results: list[engine.SimResult] = []
    for name in names:
        policy = policies.make_policy(name, cfg)
        results.append(
            engine.simulate(
                scenario,
                policy,
                replan_every_s=args.replan_every,
                horizon_s=args.horizon,
                progress=_Progress(sys.stderr, f"{scenario.name} / {name}"),
            )
        )
    if args.json:
        sys.stdout.write(json.dumps(report.as_json(results), indent=2) + "\n")
    else:
        sys.stdout.write(report.table(results))
    if args.plot is not None:
        report.plot(results, args.plot)
        sys.stderr.write(f"plot written to {args.plot}\n")
    return EXIT_OK


def _bench_planner(args: argparse.Namespace) -> int:
    """``heatshift bench planner``: time the production planner on a generated snapshot."""
    snapshot = bench.generate_snapshot(args.jobs, args.sites, seed=args.seed)
    cfg = planner_config.PlannerConfig(
        horizon_s=args.horizon, step_s=args.step, time_limit_s=args.time_limit, seed=args.seed
    )
    policy = policies.make_policy("heatshift", cfg)
    seconds: list[float] = []
    for _ in range(args.repeat):
        started = time.perf_counter()
        plan = policy.decide(snapshot)
        seconds.append(time.perf_counter() - started)
    now = snapshot.now_s
    outcome = {
        "jobs": len(snapshot.pending),
        "sites": len(snapshot.sites),
        "running": len(snapshot.running),
        "horizon_s": cfg.horizon_s,
        "step_s": cfg.step_s,
        "seed": args.seed,
        "time_limit_s": cfg.time_limit_s,
        "repeat": args.repeat,
        "plan_seconds": seconds,
        "plan_seconds_p50": statistics.median(seconds),
        "plan_seconds_max": max(seconds),
        "status": plan.status.value,
        "objective": plan.objective,
        "placements": len(plan.placements),
        "placements_now": sum(1 for p in plan.placements if p.start_s <= now + engine.EPS),
        "unschedulable": len(plan.unschedulable),
        "expected_useful_heat_kwh": plan.expected_useful_heat_kwh,
    }
    if args.json:
        sys.stdout.write(json.dumps(outcome, indent=2) + "\n")
        return EXIT_OK
    objective = "-" if plan.objective is None else f"{plan.objective:,.0f}"
    sys.stdout.write(
        f"planner benchmark: {outcome['jobs']} pending jobs, {outcome['sites']} sites, "
        f"{outcome['running']} running, horizon {durations.format_duration(cfg.horizon_s)}, "
        f"step {durations.format_duration(cfg.step_s)}, seed {args.seed}\n"
        f"  plan seconds   p50 {outcome['plan_seconds_p50']:.3f}  "
        f"max {outcome['plan_seconds_max']:.3f}  ({args.repeat} runs, "
        f"time limit {cfg.time_limit_s:g}s)\n"
        f"  solver status  {plan.status.value}, objective {objective}\n"
        f"  placements     {outcome['placements']} ({outcome['placements_now']} starting now), "
        f"{outcome['unschedulable']} unschedulable, "
        f"expected useful heat {plan.expected_useful_heat_kwh:,.1f} kWh\n"
    )
    return EXIT_OK


def _add_simulate(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = commands.add_parser(
        "simulate",
        help="replay a scenario through the scheduling policies and compare them",
        description="Replay a scenario (sites, heat demand, job trace) through each policy "
        "and report useful, dumped and boiler heat, deadline misses, waiting and planner time.",
    )
    p.add_argument(
        "--scenario",
        type=Path,
        metavar="FILE",
        help="scenario YAML file (default: the built-in winter week)",
    )
    p.add_argument(
        "--policy",
        action="extend",
        nargs="+",
        choices=policies.POLICY_NAMES,
        metavar="NAME",
        help=f"policies to run, any of {', '.join(policies.POLICY_NAMES)} (default: all)",
    )
    p.add_argument("--json", action="store_true", help="print the metrics as JSON")
    p.add_argument("--plot", type=Path, metavar="FILE.png", help="draw heat and tanks to a PNG")
    p.add_argument(
        "--replan-every",
        type=_duration,
        metavar="DURATION",
        help="how often the policy decides, e.g. 15m or 1h (default: every scenario step)",
    )
    p.add_argument(
        "--horizon",
        type=_duration,
        default=24 * 3600.0,
        metavar="DURATION",
        help="planning horizon, also how far the oracle sees ahead (default: 24h)",
    )
    p.set_defaults(handler=_simulate)


def _add_bench(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = commands.add_parser("bench", help="benchmarks (times are printed, never asserted)")
    kinds = p.add_subparsers(dest="bench", metavar="BENCHMARK", required=True)
    planner = kinds.add_parser(
        "planner",
        help="time the heatshift planner on a generated snapshot",
        description="Generate a seeded snapshot (N pending jobs, M sites) and time the "
        "production planner's decide() on it.",
    )
    planner.add_argument("--jobs", type=_count, required=True, metavar="N")
    planner.add_argument("--sites", type=_positive_int, required=True, metavar="M")
    planner.add_argument("--horizon", type=_duration, default=24 * 3600.0, metavar="DURATION")
    planner.add_argument("--step", type=_duration, default=15 * 60.0, metavar="DURATION")
    planner.add_argument("--seed", type=int, default=0)
    planner.add_argument("--repeat", type=_positive_int, default=5, metavar="R")
    planner.add_argument(
        "--time-limit",
        type=_duration,
        default=2.0,
        metavar="DURATION",
        help="the solver's wall-clock limit per plan (default: 2s)",
    )
    planner.add_argument("--json", action="store_true", help="print the numbers as JSON")
    planner.set_defaults(handler=_bench_planner)


def _add_metering_sim(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = commands.add_parser(
        "metering-sim",
        help="serve the reference metering API for a scenario's sites",
        description="Serve the heatshift metering API (and Prometheus gauges on /metrics) for "
        "the sites of a scenario: demand from its series, tanks from the physics, faults "
        "injectable through /v1/admin/faults. Runs until interrupted.",
    )
    metering_server.add_arguments(p)
    p.set_defaults(handler=metering_server.run_from_args)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="heatshift",
        description="Heat-aware workload scheduler for Kubernetes.",
    )
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    _add_simulate(commands)
    _add_bench(commands)
    _add_metering_sim(commands)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the ``heatshift`` command; returns the exit status."""
    args = build_parser().parse_args(argv)
    handler: Callable[[argparse.Namespace], int] = args.handler
    return handler(args)
