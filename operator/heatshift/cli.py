"""The ``heatshift`` command: one function per subcommand, argparse for the wiring.

``heatshift simulate`` replays a scenario through the policies and reports (table, JSON,
plot); ``heatshift bench planner`` times the production planner on a generated snapshot;
``heatshift metering-sim`` serves the reference metering API; ``heatshift run`` starts the
operator; ``heatshift plan --dry-run`` prints the plan the operator would apply now;
``heatshift report`` prints the heat ledger (:mod:`heatshift.billing`).
Kopf is imported only by ``run`` and ``plan``, so the other commands start quickly.
Called by the console script and ``python -m heatshift``. Output goes to stdout,
progress and errors to stderr; exit status 2 means the input was wrong.
"""

from __future__ import annotations

import argparse
import asyncio
import concurrent.futures
import json
import logging
import statistics
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, NoReturn, TextIO

import pydantic

from heatshift import argtypes, bench, billing, bounds, durations, model, resources
from heatshift import metrics as metrics_mod
from heatshift.kube import client as kube_client
from heatshift.kube import cycle as cycle_mod
from heatshift.kube import events as kube_events
from heatshift.kube import workloads
from heatshift.metering import server as metering_server
from heatshift.planner import bound as planner_bound
from heatshift.planner import checker, policies
from heatshift.planner import config as planner_config
from heatshift.sim import bound as sim_bound
from heatshift.sim import engine, report
from heatshift.sim import scenario as scenario_mod

EXIT_OK = 0
EXIT_FAILURE = 1
"""Something outside the input failed (e.g. the cluster could not be read)."""
EXIT_USAGE = 2
"""Bad input (arguments, scenario file): the same status argparse uses."""
SIMULATION_SOLVER_TIME_LIMIT_S = 60.0
"""The wall-clock safety net of each solve in ``heatshift simulate`` (far past what the work
budget takes), so that results repeat however loaded the machine is."""
MAX_SIMULATE_PROCESSES = 64
"""``simulate --parallel`` at most (there are only five tasks: four policies and the bound)."""
_SIMULATION_COST = {"oracle": 0, "heatshift": 1, "greedy": 3, "default": 4}
"""The order ``--parallel`` starts the tasks in, longest first (on the built-in week: the oracle,
heatshift, the bound, then the two quick ones), so that no process is left running a long one
alone at the end."""
_BOUND_COST = 2  # the bound's place in that order
MAX_BENCH_REPEATS = 1000
"""``bench planner --repeat`` at most: each run may take the solver's whole time limit."""


class _Progress:
    """Progress of one simulation on stderr.

    On a terminal a single line rewritten in place; otherwise (CI logs, pipes) one line
    per tenth done, so logs stay short.
    """

    def __init__(self, stream: TextIO, label: str, *, rewrite: bool = True) -> None:
        self.stream = stream
        self.label = label
        # Simulations side by side each write lines: one rewritten line would be garbled.
        self.tty = rewrite and stream.isatty()
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


def _simulate_policy(
    scenario: scenario_mod.Scenario,
    name: str,
    cfg: planner_config.PlannerConfig,
    replan_every_s: float | None,
    horizon_s: float,
    *,
    rewrite: bool,
) -> engine.SimResult:
    """One policy over the scenario (in this process or a worker of ``--parallel``)."""
    return engine.simulate(
        scenario,
        policies.make_policy(name, cfg),
        replan_every_s=replan_every_s,
        horizon_s=horizon_s,
        progress=_Progress(sys.stderr, f"{scenario.name} / {name}", rewrite=rewrite),
    )


def _scenario_bound(scenario: scenario_mod.Scenario) -> tuple[planner_bound.Bound, float]:
    """The scenario's bound and the seconds it took."""
    started = time.perf_counter()
    found = sim_bound.scenario_bound(scenario)
    return found, time.perf_counter() - started


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
    try:
        cfg = planner_config.PlannerConfig(
            step_s=every_steps * scenario.step_s,
            horizon_s=args.horizon,
            # The operator's default work budget ends each search; the wall clock is only
            # a safety net, so a busy machine gives the same numbers as an idle one.
            search_effort=planner_config.PlannerConfig().deterministic_time,
            time_limit_s=SIMULATION_SOLVER_TIME_LIMIT_S,
        )
    except pydantic.ValidationError as err:
        # Checked before the run: e.g. --replan-every rounded up to whole scenario steps.
        sys.stderr.write(
            f"heatshift simulate: error: {model.validation_reason(err)} (the planning step is "
            f"--replan-every rounded up to whole {durations.format_duration(scenario.step_s)} "
            "scenario steps)\n"
        )
        return EXIT_USAGE
    runs = [(scenario, name, cfg, args.replan_every, args.horizon) for name in names]
    found: planner_bound.Bound | None = None
    bound_seconds = 0.0
    if args.parallel == 1:
        results = [_simulate_policy(*run, rewrite=True) for run in runs]
        if args.bound:
            found, bound_seconds = _scenario_bound(scenario)
    else:
        # Each search ends at its work budget, not the clock, so side by side the numbers are
        # the same as one after another. Longest first (-1 is the bound).
        order = sorted((_SIMULATION_COST[run[1]], i) for i, run in enumerate(runs))
        if args.bound:
            order = sorted([*order, (_BOUND_COST, -1)])
        with concurrent.futures.ProcessPoolExecutor(min(args.parallel, len(order))) as pool:
            futures: dict[int, concurrent.futures.Future[Any]] = {
                i: pool.submit(_scenario_bound, scenario)
                if i < 0
                else pool.submit(_simulate_policy, *runs[i], rewrite=False)
                for _, i in order
            }
            results = [futures[i].result() for i in range(len(runs))]
            if args.bound:
                found, bound_seconds = futures[-1].result()
    bound_kwh = None
    if found is not None:
        bound_kwh = found.useful_heat_kwh
        sys.stderr.write(
            f"{scenario.name} / bound: {found.how()}, {found.variables:,} variables, "
            f"{bound_seconds:.1f}s\n"
        )
    if args.json:
        sys.stdout.write(json.dumps(report.as_json(results, bound_kwh), indent=2) + "\n")
    else:
        sys.stdout.write(report.table(results, bound_kwh))
    if args.plot is not None:
        try:
            report.plot(results, args.plot)
        except OSError as err:  # checked up front; the disk can still fill or vanish
            sys.stderr.write(
                f"heatshift simulate: error: cannot write the plot to {args.plot}: "
                f"{err.strerror or err}\n"
            )
            return EXIT_FAILURE
        sys.stderr.write(f"plot written to {args.plot}\n")
    return EXIT_OK


def _bench_planner(args: argparse.Namespace) -> int:
    """``heatshift bench planner``: time the production planner on a generated snapshot."""
    try:
        cfg = planner_config.PlannerConfig(
            horizon_s=args.horizon, step_s=args.step, time_limit_s=args.time_limit, seed=args.seed
        )
    except pydantic.ValidationError as err:
        sys.stderr.write(f"heatshift bench planner: error: {model.validation_reason(err)}\n")
        return EXIT_USAGE
    snapshot = bench.generate_snapshot(args.jobs, args.sites, seed=args.seed)
    policy = policies.make_policy("heatshift", cfg)
    seconds: list[float] = []
    for _ in range(args.repeat):
        started = time.perf_counter()
        plan = policy.decide(snapshot)
        seconds.append(time.perf_counter() - started)
    now = snapshot.now_s
    limit = planner_bound.horizon_bound(snapshot, cfg)
    # The plan's heat over the bound's slots and demand, so the two compare like with like.
    heat = checker.expected_heat(snapshot, plan.placements, limit.slot_starts, limit.demand_kw)
    bound_kwh = limit.bound.useful_heat_kwh
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
        "bound_useful_heat_kwh": bound_kwh,
        "bound_status": limit.bound.status.value,
        "bound_jobs_merged": limit.bound.merged,
        "fraction_of_bound": heat.useful_kwh / bound_kwh if bound_kwh > 0 else 1.0,
        "notes": list(plan.notes),
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
        f"  horizon bound  {bound_kwh:,.1f} kWh ({limit.bound.how()}): the plan "
        f"expects {outcome['fraction_of_bound']:.1%} of it\n"
    )
    for note in plan.notes:  # how the planner sized the problem, and why
        sys.stdout.write(f"  note           {note}\n")
    return EXIT_OK


PROBE_LOGGERS = ("aiohttp.access", "kopf.activities.probe")
"""Loggers that write a line per HTTP request or probe: the kubelet probes /healthz every few
seconds, and each probe's access line and "Activity 'planner' succeeded" would bury the cycle
lines ``kubectl logs`` is read for. Only their warnings are kept."""


def configure_logging(level: str | int) -> None:
    """The operator's log format, with :data:`PROBE_LOGGERS` quiet below warnings."""
    logging.basicConfig(level=level, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    numeric = logging.getLevelName(level) if isinstance(level, str) else level
    for name in PROBE_LOGGERS:
        logging.getLogger(name).setLevel(max(logging.WARNING, int(numeric)))


def _metering_sim(args: argparse.Namespace) -> int:
    """``heatshift metering-sim``, logging what it decides (loads set, the cluster's load as
    read) at INFO, without a line per request."""
    configure_logging(logging.INFO)
    return metering_server.run_from_args(args)


def _run(args: argparse.Namespace) -> int:
    """``heatshift run``: start the operator; returns when interrupted."""
    from heatshift import handlers

    configure_logging(args.log_level)
    options = handlers.RunOptions(
        namespaces=tuple(dict.fromkeys(args.namespace or ())),
        kubeconfig=args.kubeconfig,
        context=args.context,
        metrics_port=args.metrics_port or None,
        health_port=args.health_port or None,
        webhook_port=args.webhook_port,
        webhook_host=args.webhook_host,
        webhook_cert_dir=args.webhook_cert_dir,
        webhook_url=args.webhook_url,
        manage_webhook_config=args.manage_webhook_config,
        peering=args.peering,
        standalone=args.standalone,
        priority=args.priority,
        kueue=args.kueue,
    )
    try:
        handlers.run(options)
    except kube_client.KubeCredentialError as err:
        sys.stderr.write(f"heatshift run: error: cannot log in: {err}\n")
        return EXIT_FAILURE
    return EXIT_OK


def _describe_cycle(result: cycle_mod.CycleResult) -> str:
    """A dry-run cycle in words: sites, the plan, what would be released now and why."""
    snap, plan = result.built.snapshot, result.outcome.plan
    lines = [
        f"HeatPolicy {result.policy}: {len(snap.pending)} held, {len(snap.running)} running, "
        f"plan {plan.status.value} in {result.outcome.seconds:.2f}s, "
        f"expected useful heat {plan.expected_useful_heat_kwh:.1f} kWh"
    ]
    if result.outcome.error:
        lines.append(f"  planner fell back to the heat-unaware plan: {result.outcome.error}")
    for site in snap.sites:
        state = snap.states[site.name]
        heat = (
            f"demand {state.demand_kw:.1f} kW, tank {state.tank_energy_kwh:.1f}/"
            f"{site.tank.capacity_kwh:g} kWh"
            if state.heat_aware
            else f"heat-unaware ({state.reason})"
        )
        lines.append(
            f"  site {site.name}: cpu {site.capacity.cpu:g}, gpu {site.capacity.gpu}, {heat}"
        )
    releasing = {r.workload_id for r in result.releases}
    for r in result.releases:
        lines.append(
            f"  would release {r.kind.value} {r.namespace}/{r.name} to {r.site or '(any node)'} "
            f"[{r.reason.value}]: {r.decision}"
        )
    for p in plan.placements:
        if p.job_id not in releasing:
            lines.append(
                f"  would hold {p.job_id}: planned at {p.site} from "
                f"{workloads.format_time(p.start_s)}"
            )
    for u in plan.unschedulable:
        if u.job_id not in releasing:
            lines.append(f"  cannot place {u.job_id}: {u.reason}")
    for job_id, problems in result.built.problems.items():
        lines.extend(f"  hint problem on {job_id}: {p.message}" for p in problems)
    lines.extend(f"  note: {n}" for n in plan.notes)
    return "\n".join(lines) + "\n"


async def _dry_run(args: argparse.Namespace) -> list[str]:
    from heatshift.kube import login

    names: Sequence[str] = args.policy or ()
    namespaces = tuple(args.namespace or ())
    async with await login.connect(args.kubeconfig, args.context) as session:
        api = session.api
        memory = cycle_mod.Memory(recorder=kube_events.Recorder(api), metrics=metrics_mod.Metrics())
        if not names:
            found = await api.list_objects(cycle_mod.HEATPOLICIES)
            names = sorted(str((p.get("metadata") or {}).get("name")) for p in found)
        out: list[str] = []
        for name in names:
            result = await cycle_mod.run_cycle(
                api, name, memory, now_s=time.time(), apply_plan=False, namespaces=namespaces
            )
            out.append(_describe_cycle(result))
        return out


def _plan(args: argparse.Namespace) -> int:
    """``heatshift plan --dry-run``: print the plan for the live cluster, change nothing."""
    if not args.dry_run:
        sys.stderr.write(
            "heatshift plan: error: only --dry-run is supported; the running operator applies "
            "plans\n"
        )
        return EXIT_USAGE
    logging.basicConfig(level=logging.WARNING)
    try:
        texts = asyncio.run(_dry_run(args))
    except (cycle_mod.PolicyInvalid, cycle_mod.PolicyNotFound) as err:
        sys.stderr.write(f"heatshift plan: error: {err}\n")
        return EXIT_USAGE
    except kube_client.KubeCredentialError as err:
        sys.stderr.write(f"heatshift plan: error: cannot log in: {err}\n")
        return EXIT_FAILURE
    except kube_client.KubeAPIError as err:
        sys.stderr.write(f"heatshift plan: error: the cluster could not be read: {err}\n")
        return EXIT_FAILURE
    if not texts:
        sys.stdout.write("no HeatPolicies: nothing is held, nothing to plan\n")
    sys.stdout.write("\n".join(texts))
    return EXIT_OK


async def _leafsites(args: argparse.Namespace) -> list[resources.LeafSite]:
    from heatshift.kube import login

    async with await login.connect(args.kubeconfig, args.context) as session:
        found = await session.api.list_objects(cycle_mod.LEAFSITES)
    out: list[resources.LeafSite] = []
    for obj in found:
        body: dict[str, Any] = {
            k: obj[k] for k in ("apiVersion", "kind", "metadata", "spec", "status") if k in obj
        }
        body.setdefault("apiVersion", resources.GROUP_VERSION)
        body.setdefault("kind", "LeafSite")
        try:
            parsed = resources.parse_resource(body)
        except resources.ResourceError as err:
            name = (obj.get("metadata") or {}).get("name", "?")
            sys.stderr.write(f"heatshift report: skipping LeafSite {name}: {err}\n")
            continue
        if isinstance(parsed, resources.LeafSite):
            out.append(parsed)
    return out


def _report(args: argparse.Namespace) -> int:
    """``heatshift report``: the heat ledger from the cluster or a simulation result."""
    if args.simulation is not None:
        if args.period != "current":
            sys.stderr.write("heatshift report: error: a simulation has one period only\n")
            return EXIT_USAGE
        try:
            doc = json.loads(args.simulation.read_text("utf-8"))
            rows = billing.rows_from_simulation(doc, args.policy)
        except (OSError, UnicodeDecodeError, ValueError) as err:
            sys.stderr.write(f"heatshift report: error: {args.simulation}: {err}\n")
            return EXIT_USAGE
    else:
        if args.policy is not None:
            sys.stderr.write("heatshift report: error: --policy applies to --simulation only\n")
            return EXIT_USAGE
        try:
            rows = billing.rows_from_leafsites(asyncio.run(_leafsites(args)), args.period)
        except kube_client.KubeCredentialError as err:
            sys.stderr.write(f"heatshift report: error: cannot log in: {err}\n")
            return EXIT_FAILURE
        except kube_client.KubeAPIError as err:
            sys.stderr.write(f"heatshift report: error: the cluster could not be read: {err}\n")
            return EXIT_FAILURE
        if not rows:
            sys.stderr.write(
                f"heatshift report: no LeafSite has a ledger for the {args.period} period\n"
            )
    sys.stdout.write(billing.render(rows, args.format))
    return EXIT_OK


def _add_report(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = commands.add_parser(
        "report",
        help="print the heat ledger per site and for the fleet (table, CSV or JSON, for billing)",
        description="The heat ledger of each LeafSite (from its status: metered from meter "
        "registers, or estimated where the meter has none, as each figure says) and of the "
        "fleet, for the current or the previous period; or, with --simulation, the same "
        "figures of a 'heatshift simulate --json' result.",
    )
    p.add_argument(
        "--period",
        choices=("current", "previous"),
        default="current",
        help="which ledger period (default: current)",
    )
    p.add_argument(
        "--format", choices=billing.FORMATS, default="table", help="output (default: table)"
    )
    p.add_argument(
        "--simulation",
        type=Path,
        metavar="FILE",
        help="read a 'heatshift simulate --json' result instead of the cluster",
    )
    p.add_argument(
        "--policy", metavar="NAME", help="with --simulation: that policy only (default: all)"
    )
    argtypes.add_login_arguments(p)
    p.set_defaults(handler=_report)


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
    p.add_argument(
        "--no-bound",
        dest="bound",
        action="store_false",
        help="skip the bound row (an LP over the whole scenario: the most useful heat any "
        "schedule that misses no deadline could deliver)",
    )
    p.add_argument(
        "--plot",
        type=argtypes.output_file(report.PLOT_SUFFIXES),
        metavar="FILE",
        help=f"draw heat and tanks to FILE ({', '.join(report.PLOT_SUFFIXES)}); its directory "
        "must exist",
    )
    p.add_argument(
        "--replan-every",
        type=argtypes.duration_in(bounds.REPLAN_INTERVAL),
        metavar="DURATION",
        help="how often the policy decides, e.g. 15m or 1h, rounded up to whole scenario "
        f"steps ({bounds.REPLAN_INTERVAL.words()}; default: every scenario step)",
    )
    p.add_argument(
        "--horizon",
        type=argtypes.duration_in(bounds.PLANNING_HORIZON),
        default=24 * 3600.0,
        metavar="DURATION",
        help="planning horizon, also how far the oracle sees ahead "
        f"({bounds.PLANNING_HORIZON.words()}; default: 24h)",
    )
    p.add_argument(
        "--parallel",
        type=argtypes.whole_number_in(1, MAX_SIMULATE_PROCESSES),
        default=1,
        metavar="N",
        help="run the policies and the bound in up to N processes at once (the numbers are "
        f"the same; 1 to {MAX_SIMULATE_PROCESSES}, default: 1)",
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
    planner.add_argument(
        "--jobs",
        type=argtypes.whole_number_in(0, bounds.MAX_JOBS_PER_SCENARIO),
        required=True,
        metavar="N",
    )
    planner.add_argument(
        "--sites", type=argtypes.whole_number_in(1, bounds.MAX_SITES), required=True, metavar="M"
    )
    planner.add_argument(
        "--horizon",
        type=argtypes.duration_in(bounds.PLANNING_HORIZON),
        default=24 * 3600.0,
        metavar="DURATION",
        help=f"planning horizon ({bounds.PLANNING_HORIZON.words()}; default: 24h)",
    )
    planner.add_argument(
        "--step",
        type=argtypes.duration_in(bounds.PLANNING_STEP),
        default=15 * 60.0,
        metavar="DURATION",
        help=f"slot length near now ({bounds.PLANNING_STEP.words()}; default: 15m)",
    )
    planner.add_argument(
        "--seed",
        type=argtypes.whole_number_in(0, planner_config.MAX_SEED),
        default=0,
        metavar="S",
    )
    planner.add_argument(
        "--repeat", type=argtypes.whole_number_in(1, MAX_BENCH_REPEATS), default=5, metavar="R"
    )
    planner.add_argument(
        "--time-limit",
        type=argtypes.duration_in(bounds.SOLVER_TIME_LIMIT),
        default=2.0,
        metavar="DURATION",
        help="the solver's wall-clock limit per plan "
        f"({bounds.SOLVER_TIME_LIMIT.words()}; default: 2s)",
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
    p.set_defaults(handler=_metering_sim)


def _add_cluster_arguments(p: argparse.ArgumentParser, verb: str) -> None:
    """``--namespace``, ``--kubeconfig`` and ``--context``, shared by ``run`` and ``plan``."""
    p.add_argument(
        "--namespace",
        action="append",
        metavar="NS",
        help=f"{verb} Jobs and Pods in this namespace only; repeatable (default: all namespaces)",
    )
    argtypes.add_login_arguments(p)


def _add_run(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = commands.add_parser(
        "run",
        help="run the operator (hold, plan and release workloads)",
        description="Run the heatshift operator: hold Jobs and bare Pods that a HeatPolicy "
        "selects (mutating webhook at /hold-jobs and /hold-pods), plan each policy on its "
        "replan interval, release work onto LeafSites, keep LeafSite and HeatPolicy status, "
        "and serve Prometheus metrics. Two replicas are safe: Kopf peering lets one act.",
    )
    p.add_argument(
        "--peering",
        default="heatshift",
        metavar="NAME",
        help="Kopf peering object used to elect the active replica (default: heatshift)",
    )
    p.add_argument(
        "--standalone",
        action="store_true",
        help="no peering: act alone (a single replica, or local development)",
    )
    p.add_argument(
        "--priority",
        type=int,
        metavar="N",
        help="peering priority; the live replica with the highest one acts (default: random, "
        "so that replicas never tie: Kopf pauses all of them on a tie)",
    )
    p.add_argument(
        "--kueue",
        action="store_true",
        help="also decide Kueue admission checks whose controllerName is heatshift.dev/heat "
        "(Kueue's CRDs must be installed)",
    )
    _add_cluster_arguments(p, "manage")
    p.add_argument(
        "--metrics-port",
        type=argtypes.port,
        default=8080,
        metavar="PORT",
        help="serve Prometheus metrics at /metrics on this port; 0 disables (default: 8080)",
    )
    p.add_argument(
        "--health-port",
        type=argtypes.port,
        default=8081,
        metavar="PORT",
        help=(
            "serve the liveness probe /healthz and the readiness probe /readyz (ready once "
            "the cluster is listed) on this port; 0 disables (default: 8081)"
        ),
    )
    p.add_argument(
        "--webhook-port",
        type=argtypes.port,
        default=9443,
        metavar="PORT",
        help="HTTPS port of the admission webhook server (default: 9443)",
    )
    p.add_argument(
        "--webhook-cert-dir",
        type=Path,
        metavar="DIR",
        help="directory with tls.crt and tls.key for the webhook server (a mounted Secret); "
        "without it a self-signed certificate is made, for development only",
    )
    p.add_argument(
        "--webhook-host",
        metavar="HOST",
        help="host name the API server uses to reach the webhook, put in the self-signed "
        "certificate and the managed configuration (default: the listening address)",
    )
    p.add_argument(
        "--webhook-url",
        metavar="URL",
        help="base URL written into a managed webhook configuration, e.g. "
        "https://heatshift.heatshift-system.svc:443 (only with --manage-webhook-config)",
    )
    p.add_argument(
        "--manage-webhook-config",
        action="store_true",
        help="create and keep the MutatingWebhookConfiguration (off by default: the Helm "
        "chart owns it, pointing at the paths /hold-jobs and /hold-pods)",
    )
    p.add_argument(
        "--log-level",
        default="INFO",
        choices=("DEBUG", "INFO", "WARNING", "ERROR"),
        help="log level (default: INFO)",
    )
    p.set_defaults(handler=_run)


def _add_plan(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = commands.add_parser(
        "plan",
        help="print the plan the operator would apply now, and why (changes nothing)",
        description="Read the live cluster (LeafSites, HeatPolicies, Nodes, held and running "
        "Jobs and Pods, metering readings), make each policy's plan and print what would be "
        "released now, where and why, and what would be held. Nothing is changed.",
    )
    p.add_argument(
        "--dry-run",
        action="store_true",
        help="required: print the plan without applying it",
    )
    p.add_argument(
        "--policy",
        action="append",
        metavar="NAME",
        help="plan this HeatPolicy only; repeatable (default: every HeatPolicy)",
    )
    _add_cluster_arguments(p, "look at")
    p.set_defaults(handler=_plan)


class _Parser(argparse.ArgumentParser):
    """argparse, with a usage error in one line (the usage block is one ``--help`` away)."""

    def error(self, message: str) -> NoReturn:
        self.exit(EXIT_USAGE, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def build_parser() -> argparse.ArgumentParser:
    parser: argparse.ArgumentParser = _Parser(
        prog="heatshift",
        description="Heat-aware workload scheduler for Kubernetes.",
    )
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    _add_simulate(commands)
    _add_bench(commands)
    _add_metering_sim(commands)
    _add_run(commands)
    _add_plan(commands)
    _add_report(commands)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the ``heatshift`` command; returns the exit status."""
    args = build_parser().parse_args(argv)
    handler: Callable[[argparse.Namespace], int] = args.handler
    return handler(args)
