"""heatshift as a Kueue admission check (controllerName ``heatshift.dev/heat``).

Kueue queues the work and reserves its quota; heatshift only answers its admission check, with
the same planner, LeafSites and HeatPolicies as for plain Jobs:

- :mod:`heatshift.kueue.objects` (pure): Kueue Workloads and AdmissionChecks as heatshift
  sees them, and the admission check states it writes back.
- :mod:`heatshift.kueue.decide` (pure but for the planner's thread): one decision over every
  Workload whose heatshift check is Pending: ``Ready`` with a nodeSelector on every pod set,
  ``Retry`` with ``requeueAfterSeconds``, or ``Ready`` heat-unaware by its start deadline.
- :mod:`heatshift.kueue.controller`: the I/O around it: owners' hints, metering, writing the
  check states by server-side apply, Events.
- :mod:`heatshift.kueue.handlers`: the Kopf wiring, registered only with ``heatshift run
  --kueue``.
"""
