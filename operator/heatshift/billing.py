"""``heatshift report``: the heat ledger per site and for the fleet, as a table, CSV or JSON.

Pure formatting: rows come from LeafSite ledgers (:func:`rows_from_leafsites`, the status the
operator writes, see :mod:`heatshift.ledger`) or from a ``heatshift simulate --json`` document
(:func:`rows_from_simulation`), and :func:`render` prints them. Reading the cluster is the
CLI's (:mod:`heatshift.cli`), through the same login as every other command.

The fleet row sums the energies, fuel, CO2 and hours; its ERE is the fleet's own, the IT
weighted mean of the sites' (the sum of facility energy minus reuse over the sum of IT energy).
"""

from __future__ import annotations

import csv
import dataclasses
import io
import json
from collections.abc import Iterable, Mapping, Sequence
from typing import Any, Literal

from heatshift import resources

Format = Literal["table", "csv", "json"]
FORMATS: tuple[Format, ...] = ("table", "csv", "json")
FLEET = "fleet"


@dataclasses.dataclass(frozen=True, slots=True)
class Row:
    """One site's (or the fleet's) ledger for one period."""

    site: str
    period_start: str
    period_end: str
    it_energy_kwh: float
    it_energy_source: str
    heat_delivered_kwh: float
    heat_delivered_source: str
    heat_dumped_kwh: float
    heat_dumped_source: str
    hours_dumped_while_wanted: float
    hours_below_min_supply_temp: float | None
    ere: float | None
    fuel_avoided_kwh: float
    co2_avoided_kg: float
    policy: str = ""
    """The simulated policy, for rows from a simulation."""


def _period_row(site: str, p: resources.LedgerPeriod) -> Row:
    return Row(
        site=site,
        period_start=p.start.isoformat().replace("+00:00", "Z"),
        period_end=p.end.isoformat().replace("+00:00", "Z"),
        it_energy_kwh=p.it_energy.kwh,
        it_energy_source=p.it_energy.source.value,
        heat_delivered_kwh=p.heat_delivered.kwh,
        heat_delivered_source=p.heat_delivered.source.value,
        heat_dumped_kwh=p.heat_dumped.kwh,
        heat_dumped_source=p.heat_dumped.source.value,
        hours_dumped_while_wanted=p.hours_dumped_while_wanted,
        hours_below_min_supply_temp=p.hours_below_min_supply_temp,
        ere=p.ere,
        fuel_avoided_kwh=p.fuel_avoided_kwh,
        co2_avoided_kg=p.co2_avoided_kg,
    )


def rows_from_leafsites(
    leafsites: Iterable[resources.LeafSite], period: Literal["current", "previous"]
) -> list[Row]:
    """A row per LeafSite with a ledger for ``period``, by name."""
    out: list[Row] = []
    for ls in sorted(leafsites, key=lambda s: s.metadata.name):
        book = ls.status.ledger if ls.status is not None else None
        chosen = None if book is None else (book.current if period == "current" else book.previous)
        if chosen is not None:
            out.append(_period_row(ls.metadata.name, chosen))
    return out


def _num(doc: Mapping[str, Any], key: str) -> float:
    value = doc.get(key)
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ValueError(f"{key} is not a number")
    return float(value)


def rows_from_simulation(doc: object, policy: str | None = None) -> list[Row]:
    """Rows per (policy, site) of a ``heatshift simulate --json`` document; all policies
    unless ``policy`` names one. Raises ValueError saying what is wrong with the document."""
    if not isinstance(doc, Mapping) or not isinstance(doc.get("results"), list):
        raise ValueError("not a heatshift simulate --json document (no results list)")
    scenario = str(doc.get("scenario", ""))
    out: list[Row] = []
    for result in doc["results"]:
        if not isinstance(result, Mapping) or not isinstance(result.get("sites"), Mapping):
            raise ValueError(
                "a result has no per-site ledger (sites): made by an older heatshift simulate?"
            )
        name = str(result.get("policy", ""))
        if policy is not None and name != policy:
            continue
        for site, figures in sorted(result["sites"].items()):
            if not isinstance(figures, Mapping):
                raise ValueError(f"site {site!r} of policy {name!r} is not an object")
            try:
                ere = figures.get("ere")
                out.append(
                    Row(
                        site=str(site),
                        period_start=f"scenario {scenario}",
                        period_end="",
                        it_energy_kwh=_num(figures, "it_energy_kwh"),
                        it_energy_source="simulated",
                        heat_delivered_kwh=_num(figures, "heat_delivered_kwh"),
                        heat_delivered_source="simulated",
                        heat_dumped_kwh=_num(figures, "heat_dumped_kwh"),
                        heat_dumped_source="simulated",
                        hours_dumped_while_wanted=0.0,
                        hours_below_min_supply_temp=None,
                        ere=None if ere is None else _num(figures, "ere"),
                        fuel_avoided_kwh=_num(figures, "fuel_avoided_kwh"),
                        co2_avoided_kg=_num(figures, "co2_avoided_kg"),
                        policy=name,
                    )
                )
            except ValueError as err:
                raise ValueError(f"site {site!r} of policy {name!r}: {err}") from None
    if policy is not None and not out:
        raise ValueError(f"the simulation has no policy {policy!r}")
    return out


def _combined_source(sources: Sequence[str]) -> str:
    kinds = set(sources) - {"none"}
    if not kinds:
        return "none"
    return kinds.pop() if len(kinds) == 1 else "mixed"


def fleet_rows(rows: Sequence[Row]) -> list[Row]:
    """A fleet row per policy (one for a cluster's rows): sums, and the fleet's ERE."""
    out: list[Row] = []
    for policy in dict.fromkeys(r.policy for r in rows):
        mine = [r for r in rows if r.policy == policy]
        it = sum(r.it_energy_kwh for r in mine)
        # ERE x IT is each site's facility energy minus its reuse: they add up.
        weighted = sum(r.ere * r.it_energy_kwh for r in mine if r.ere is not None)
        below = [r.hours_below_min_supply_temp for r in mine]
        starts = sorted({r.period_start for r in mine})
        ends = sorted({r.period_end for r in mine})
        out.append(
            Row(
                site=FLEET,
                period_start=starts[0] if len(starts) == 1 else "mixed",
                period_end=ends[0] if len(ends) == 1 else "mixed",
                it_energy_kwh=it,
                it_energy_source=_combined_source([r.it_energy_source for r in mine]),
                heat_delivered_kwh=sum(r.heat_delivered_kwh for r in mine),
                heat_delivered_source=_combined_source([r.heat_delivered_source for r in mine]),
                heat_dumped_kwh=sum(r.heat_dumped_kwh for r in mine),
                heat_dumped_source=_combined_source([r.heat_dumped_source for r in mine]),
                hours_dumped_while_wanted=sum(r.hours_dumped_while_wanted for r in mine),
                hours_below_min_supply_temp=(
                    None
                    if all(b is None for b in below)
                    else sum(b for b in below if b is not None)
                ),
                ere=weighted / it if it > 0 else None,
                fuel_avoided_kwh=sum(r.fuel_avoided_kwh for r in mine),
                co2_avoided_kg=sum(r.co2_avoided_kg for r in mine),
                policy=policy,
            )
        )
    return out


COLUMNS: tuple[tuple[str, str, int], ...] = (
    ("policy", "policy", -1),
    ("site", "site", -1),
    ("period", "period_start", -1),
    ("IT kWh", "it_energy_kwh", 3),
    ("IT from", "it_energy_source", -1),
    ("delivered kWh", "heat_delivered_kwh", 3),
    ("delivered from", "heat_delivered_source", -1),
    ("dumped kWh", "heat_dumped_kwh", 3),
    ("dumped from", "heat_dumped_source", -1),
    ("dumped-while-wanted h", "hours_dumped_while_wanted", 2),
    ("below-min-supply h", "hours_below_min_supply_temp", 2),
    ("ERE", "ere", 3),
    ("fuel avoided kWh", "fuel_avoided_kwh", 3),
    ("CO2 avoided kg", "co2_avoided_kg", 3),
)
"""The table's columns: header, Row field, digits (-1: text)."""


def _cell(value: object, digits: int) -> str:
    if value is None:
        return "-"
    if digits < 0 or not isinstance(value, int | float):
        return str(value)
    return f"{value:,.{digits}f}"


def render(rows: Sequence[Row], fmt: Format) -> str:
    """The rows and their fleet rows: an aligned table, CSV with a header, or JSON
    (``{"sites": [...], "fleet": [...]}``, numbers unrounded)."""
    fleet = fleet_rows(rows)
    with_policy = any(r.policy for r in rows)
    if fmt == "json":
        return (
            json.dumps(
                {
                    "sites": [dataclasses.asdict(r) for r in rows],
                    "fleet": [dataclasses.asdict(r) for r in fleet],
                },
                indent=2,
            )
            + "\n"
        )
    if fmt == "csv":
        buffer = io.StringIO()
        fields = [f.name for f in dataclasses.fields(Row)]
        writer = csv.DictWriter(buffer, fieldnames=fields, lineterminator="\n")
        writer.writeheader()
        for r in [*rows, *fleet]:
            writer.writerow({k: ("" if v is None else v) for k, v in dataclasses.asdict(r).items()})
        return buffer.getvalue()
    columns = [c for c in COLUMNS if with_policy or c[1] != "policy"]
    table = [[c[0] for c in columns]]
    for r in [*rows, *fleet]:
        table.append([_cell(getattr(r, c[1]), c[2]) for c in columns])
    widths = [max(len(line[i]) for line in table) for i in range(len(columns))]
    lines = []
    for line in table:
        cells = [
            cell.ljust(w) if c[2] < 0 else cell.rjust(w)
            for cell, w, c in zip(line, widths, columns, strict=True)
        ]
        lines.append("  ".join(cells).rstrip())
    return "\n".join(lines) + "\n"
