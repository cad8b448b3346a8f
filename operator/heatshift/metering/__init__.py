"""Metering: where offtaker heat demand and tank state come from, and how far to trust them.

The contract is ``openapi.yaml`` beside this file (the heatshift metering API). Modules:

- :mod:`heatshift.metering.readings`: the wire shape of a reading, its validation into a
  frozen :class:`~heatshift.metering.readings.SiteReading` or a
  :class:`~heatshift.metering.readings.Rejection`, and the planner's ``model.SiteState``.
- :mod:`heatshift.metering.source`: the protocol every source implements.
- :mod:`heatshift.metering.errors`: the error hierarchy used inside the sources.
- :mod:`heatshift.metering.transport`: one GET with a total deadline, a size cap and bounded
  retries, on the event loop (no worker threads), shared by both sources.
- :mod:`heatshift.metering.http`: the metering API client (httpx).
- :mod:`heatshift.metering.prometheus`: PromQL instant queries against a Prometheus server.
- :mod:`heatshift.metering.server`: the reference metering API server (aiohttp) that plays a
  scenario, with fault injection and Prometheus gauges.

Called by the operator (to build a snapshot), the simulator and the e2e harness. The decision
core (``model``, ``thermal``, ``planner``) never imports this package.
"""
