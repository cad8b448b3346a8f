"""Work this process released that the watched view does not show yet, and one placer at a time.

Every HeatPolicy plans in its own loop, from the same view of the cluster. Without care two
policies sharing a site both see its free capacity and both fill it; and a release is seen
through the watch only a moment after its patch, so even one after the other a policy could
plan from a view that still shows the other's work as held. :class:`Placements` closes both
gaps: cycles place (snapshot, plan, release) one at a time under :attr:`Placements.lock`, and
each released workload is booked until the view shows it released, so the next snapshot
counts it as running at its site whatever the watch has delivered.

Pure bookkeeping (no I/O); owned by :class:`heatshift.kube.cycle.Memory`.
"""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import Iterable, Sequence

from heatshift.kube import workloads

KEEP_S = 600.0
"""A booking the view never confirms (the watch is gone) is dropped after this: by then the
view's staleness check has said so, and a lost booking only under-counts for a cycle."""


@dataclasses.dataclass(frozen=True, slots=True)
class _Booked:
    released: workloads.Workload
    at_s: float


@dataclasses.dataclass
class Placements:
    """Released workloads not yet seen released in the view, by workload id."""

    lock: asyncio.Lock = dataclasses.field(default_factory=asyncio.Lock)
    """Held from a cycle's snapshot to its last release: one policy places work at a time."""
    booked: dict[str, _Booked] = dataclasses.field(default_factory=dict)

    def book(self, released: Iterable[tuple[workloads.Workload, str]], now_s: float) -> None:
        """``(workload as the view had it, site)`` for each release that took effect."""
        for w, site in released:
            self.booked[w.id] = _Booked(
                dataclasses.replace(w, held=False, site=site, released_at_s=now_s), now_s
            )

    def overlay(self, seen: Sequence[workloads.Workload], now_s: float) -> list[workloads.Workload]:
        """``seen`` with every booked workload the view still shows held replaced by its
        released self. Bookings the view confirms (released, finished or gone) are dropped."""
        out: list[workloads.Workload] = []
        present: set[str] = set()
        for w in seen:
            present.add(w.id)
            entry = self.booked.get(w.id)
            if entry is not None and w.held and not w.finished and now_s - entry.at_s <= KEEP_S:
                out.append(entry.released)
                continue
            if entry is not None:
                del self.booked[w.id]  # the view has caught up (or never will)
            out.append(w)
        for gone in [k for k in self.booked if k not in present]:
            del self.booked[gone]
        return out
