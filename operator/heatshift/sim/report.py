"""How simulation results are shown: a plain-text table, a JSON document and a plot.

Called by ``heatshift simulate`` (:mod:`heatshift.cli`) with the :class:`SimResult` of
each policy on one scenario. Pure formatting, apart from :func:`plot` writing its file.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from heatshift.sim import engine

PLOT_SUFFIXES = (".png", ".svg", ".pdf")
"""File types :func:`plot` writes, chosen by the file name (matplotlib's own writers, no
extra dependency)."""


@dataclass(frozen=True, slots=True)
class _Column:
    header: str
    key: str
    render: Callable[[object], str]


def _number(digits: int, scale: float = 1.0) -> Callable[[object], str]:
    def render(value: object) -> str:
        assert isinstance(value, int | float)
        return f"{value * scale:,.{digits}f}"

    return render


def _text(value: object) -> str:
    return str(value)


def _ratio(value: object) -> str:
    """A ratio to two places, ``-`` when there is none (no IT energy)."""
    if value is None:
        return "-"
    assert isinstance(value, int | float)
    return f"{value:.2f}"


COLUMNS: tuple[_Column, ...] = (
    _Column("policy", "policy", _text),
    _Column("useful kWh", "useful_heat_kwh", _number(1)),
    _Column("recoverable kWh", "recoverable_heat_kwh", _number(1)),
    _Column("dumped kWh", "dumped_heat_kwh", _number(1)),
    _Column("boiler kWh", "boiler_heat_kwh", _number(1)),
    _Column("demand kWh", "demand_kwh", _number(1)),
    _Column("reuse %", "heat_reuse_ratio", _number(1, 100.0)),
    _Column("ERE", "ere", _ratio),
    _Column("fuel avoided kWh", "fuel_avoided_kwh", _number(1)),
    _Column("CO2 avoided kg", "co2_avoided_kg", _number(1)),
    _Column("deadline misses", "deadline_misses", _text),
    _Column("jobs", "jobs_total", _text),
    _Column("completed", "jobs_completed", _text),
    _Column("unschedulable", "jobs_unschedulable", _text),
    _Column("mean wait min", "mean_wait_s", _number(1, 1 / 60)),
    _Column("plan p50 s", "plan_seconds_p50", _number(3)),
    _Column("plan max s", "plan_seconds_max", _number(3)),
)
"""The table's columns: header (with its unit), metrics key, how to print the value."""


def table(results: Sequence[engine.SimResult], bound_kwh: float | None = None) -> str:
    """The metrics of each policy as an aligned plain-text table, one row per policy, and
    with ``bound_kwh`` a last row ``bound``: the most useful heat any schedule that misses
    no deadline could deliver (:mod:`heatshift.sim.bound`); its other cells are ``-``."""
    rows = [[c.header for c in COLUMNS]]
    for result in results:
        metrics = result.metrics()
        rows.append([c.render(metrics[c.key]) for c in COLUMNS])
    if bound_kwh is not None:
        rows.append([c.render(bound_kwh) if c.key == "useful_heat_kwh" else "-" for c in COLUMNS])
        rows[-1][0] = "bound"
    widths = [max(len(row[i]) for row in rows) for i in range(len(COLUMNS))]
    lines = []
    for row in rows:
        # The policy name reads left-aligned, numbers right-aligned.
        cells = [row[0].ljust(widths[0])]
        cells += [cell.rjust(width) for cell, width in zip(row[1:], widths[1:], strict=True)]
        lines.append("  ".join(cells).rstrip())
    title = f"scenario {results[0].scenario}" if results else "no results"
    initial = results[0].metrics()["initial_tank_kwh"] if results else 0.0
    if isinstance(initial, float) and initial > 0:
        lines.append(
            f"note: useful kWh includes the {initial:,.1f} kWh the tanks held at the start; "
            "reuse % counts only heat recovered in the run"
        )
    return "\n".join([title, *lines]) + "\n"


def as_json(
    results: Sequence[engine.SimResult], bound_kwh: float | None = None
) -> dict[str, object]:
    """``{"scenario": NAME, "results": [metrics, ...]}``, as ``--json`` prints it, with
    ``"bound_useful_heat_kwh"`` beside them when ``bound_kwh`` is given."""
    if not results:
        raise ValueError("no results to report")
    out: dict[str, object] = {
        "scenario": results[0].scenario,
        "results": [{**r.metrics(), "sites": r.site_ledger()} for r in results],
    }
    if bound_kwh is not None:
        out["bound_useful_heat_kwh"] = bound_kwh
    return out


def plot(results: Sequence[engine.SimResult], path: Path) -> None:
    """Draw each site's heat and tank over time, per policy, into ``path``: a PNG, SVG or
    PDF by its suffix (one of :data:`PLOT_SUFFIXES`; anything else is a ValueError, so a
    file is never written under a name other than the one given).

    One row per site: on the left the (capped) demand and the heat each policy
    delivered, kW; on the right each policy's tank energy, kWh.
    """
    if not results:
        raise ValueError("no results to plot")
    file_type = path.suffix.lower()
    if file_type not in PLOT_SUFFIXES:
        raise ValueError(f"expected a file name ending in one of {', '.join(PLOT_SUFFIXES)}")
    first = results[0]
    sites = list(first.series)
    hours = [t / 3600.0 for t in first.times_s]
    # Tank values are at each step's end; demand and delivered are step means.
    tank_hours = [(t + first.step_s) / 3600.0 for t in first.times_s]
    days = first.duration_s >= 2 * 86400
    scale = 24.0 if days else 1.0
    unit = "days" if days else "hours"
    x = [h / scale for h in hours]
    x_tank = [h / scale for h in tank_hours]

    # Imported here: matplotlib costs half a second and its config directory at import, and
    # only this command draws (`heatshift run` must start on a read-only root filesystem).
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(15, 2.4 * len(sites) + 1.2), layout="constrained")
    FigureCanvasAgg(fig)
    axes = fig.subplots(len(sites), 2, squeeze=False, sharex=True)
    colors = [f"C{i}" for i in range(len(results))]
    for row, site in enumerate(sites):
        heat, tank = axes[row][0], axes[row][1]
        heat.fill_between(
            x,
            first.series[site].demand_kw,
            step="post",
            color="0.85",
            label="demand (capped)",
        )
        for result, color in zip(results, colors, strict=True):
            heat.step(
                x,
                result.series[site].delivered_kw,
                where="post",
                color=color,
                linewidth=1.0,
                label=f"{result.policy} delivered",
            )
            tank.plot(x_tank, result.series[site].tank_kwh, color=color, linewidth=1.0)
        heat.set_ylabel(f"{site}\nheat kW")
        tank.set_ylabel("tank kWh")
        heat.set_ylim(bottom=0)
        tank.set_ylim(bottom=0)
        for ax in (heat, tank):
            ax.grid(True, linewidth=0.3, alpha=0.6)
            ax.margins(x=0)
    axes[0][0].set_title("demand vs heat delivered")
    axes[0][1].set_title("tank energy")
    axes[-1][0].set_xlabel(unit)
    axes[-1][1].set_xlabel(unit)
    handles, labels = axes[0][0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="outside lower center", ncols=len(labels), frameon=False)
    fig.suptitle(f"heatshift simulate: scenario {first.scenario}", fontweight="bold")
    fig.savefig(path, dpi=110, format=file_type[1:])
