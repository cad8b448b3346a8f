"""Scheduling policies behind one interface, so the simulator compares like with like.

``default`` (heat-unaware), ``greedy`` (follows current demand), ``heatshift`` (the
production planner, rolling horizon, forecast only) and ``oracle`` (the same planner
given perfect foresight of demand and arrivals by the simulator: the upper bound).
"""

from __future__ import annotations

from typing import Protocol

from heatshift import model
from heatshift.planner import greedy, heataware
from heatshift.planner.config import PlannerConfig

POLICY_NAMES: tuple[str, ...] = ("default", "greedy", "heatshift", "oracle")


class Policy(Protocol):
    """Decides a Plan for a Snapshot. Pure: no clock, no I/O."""

    @property
    def name(self) -> str: ...

    @property
    def needs_foresight(self) -> bool:
        """True when the caller must put the true future (demand, arrivals) in snapshots."""
        ...

    def decide(self, snapshot: model.Snapshot) -> model.Plan: ...


class DefaultPolicy:
    """What a plain cluster does: start at once where it fits, spreading load."""

    name = "default"
    needs_foresight = False

    def decide(self, snapshot: model.Snapshot) -> model.Plan:
        return greedy.default_plan(snapshot)


class GreedyPolicy:
    """Follow current demand and tank room; hold jobs while their slack lasts."""

    name = "greedy"
    needs_foresight = False

    def __init__(self, config: PlannerConfig) -> None:
        self.config = config

    def decide(self, snapshot: model.Snapshot) -> model.Plan:
        return greedy.greedy_plan(snapshot, snapshot.now_s + self.config.step_s)


class HeatshiftPolicy:
    """The production planner: CP-SAT over a rolling horizon, demand from a forecast."""

    name = "heatshift"
    needs_foresight = False

    def __init__(self, config: PlannerConfig) -> None:
        self.config = config

    def decide(self, snapshot: model.Snapshot) -> model.Plan:
        return heataware.plan(snapshot, self.config)


class OraclePolicy(HeatshiftPolicy):
    """The same planner handed the true future: the reference to measure against."""

    name = "oracle"
    needs_foresight = True


def make_policy(name: str, config: PlannerConfig | None = None) -> Policy:
    """The policy called ``name`` (one of :data:`POLICY_NAMES`)."""
    cfg = config or PlannerConfig()
    if name == "default":
        return DefaultPolicy()
    if name == "greedy":
        return GreedyPolicy(cfg)
    if name == "heatshift":
        return HeatshiftPolicy(cfg)
    if name == "oracle":
        return OraclePolicy(cfg)
    raise ValueError(f"unknown policy {name!r}; choose from {', '.join(POLICY_NAMES)}")
