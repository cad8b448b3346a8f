"""The physical limit of a scenario: the ``bound`` row of ``heatshift simulate``.

Builds the linear relaxation of :mod:`heatshift.planner.bound` over a scenario's whole run,
on the simulator's own steps, with the demand the simulator plays (each step's mean, capped at
the offtaker's rating), the tanks' starting energy, and every job the simulator would schedule
free to start anywhere between its release and its start deadline. No schedule that misses no
deadline, played through :func:`heatshift.sim.engine.simulate`, delivers more useful heat.
Called by :mod:`heatshift.cli` and the tests.
"""

from __future__ import annotations

from heatshift.planner import bound as planner_bound
from heatshift.sim import engine
from heatshift.sim import scenario as scenario_mod


def scenario_bound(
    scenario: scenario_mod.Scenario, *, merge_jobs: bool | None = None, deadlines: bool = True
) -> planner_bound.Bound:
    """The most useful heat any deadline-meeting schedule of ``scenario`` delivers (see
    :func:`heatshift.planner.bound.useful_heat_bound` for the keywords)."""
    steps = engine.step_count(scenario)
    jobs = [j for j in scenario.jobs if engine.fits_somewhere(j, scenario.sites)]
    return planner_bound.useful_heat_bound(
        scenario.sites,
        [i * scenario.step_s for i in range(steps + 1)],
        engine.capped_demand_kw(scenario),
        scenario.initial_tank_kwh,
        jobs,
        merge_jobs=merge_jobs,
        deadlines=deadlines,
    )
