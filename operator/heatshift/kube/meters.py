"""Metering results for LeafSites: sources built from their specs, fetched with a time bound.

LeafSites that share an endpoint (same URL, token and TLS setting) share one source, so one
planning cycle makes one round of requests per endpoint. Whatever goes wrong — an unreadable
token Secret, a source that hangs past the time bound, a bug in a source — becomes a per-site
:class:`~heatshift.metering.readings.Rejection`: metering never blocks planning, a site without
a reading is simply planned as heat-unaware.

Called by :mod:`heatshift.kube.cycle` once per cycle.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import dataclasses
import logging
from collections import defaultdict
from collections.abc import Callable, Mapping, Sequence
from typing import Literal

from heatshift import resources
from heatshift.kube import client
from heatshift.metering import http as metering_http
from heatshift.metering import prometheus as metering_prometheus
from heatshift.metering import readings, source

log = logging.getLogger(__name__)

Result = readings.SiteReading | readings.Rejection


@dataclasses.dataclass(frozen=True)
class Endpoint:
    """One metering endpoint and how to talk to it: LeafSites with equal endpoints share it."""

    kind: Literal["http", "prometheus"]
    url: str
    timeout_s: float
    token: str | None = None
    insecure: bool = False


SourceFactory = Callable[
    [Endpoint, Mapping[str, resources.PrometheusQueries]], source.MeteringSource
]
"""Builds a source for an endpoint (Prometheus queries by site id; empty for HTTP)."""


def default_source(
    endpoint: Endpoint, queries: Mapping[str, resources.PrometheusQueries]
) -> source.MeteringSource:
    """The real client for an endpoint: the metering API over httpx, or Prometheus."""
    if endpoint.kind == "http":
        return metering_http.HttpMeteringSource(
            endpoint.url,
            token=endpoint.token,
            verify=not endpoint.insecure,
            timeout_s=endpoint.timeout_s,
        )
    return metering_prometheus.PrometheusMeteringSource(
        endpoint.url,
        {
            site: metering_prometheus.SiteQueries(
                demand_kw=q.demand_kw,
                tank_energy_kwh=q.tank_energy_kwh,
                tank_capacity_kwh=q.tank_capacity_kwh,
                supply_temp_c=q.supply_temp_c,
                return_temp_c=q.return_temp_c,
                heat_delivered_kwh=q.heat_delivered_kwh,
                it_energy_kwh=q.it_energy_kwh,
                heat_dumped_kwh=q.heat_dumped_kwh,
                flow_m3_per_h=q.flow_m3_per_h,
            )
            for site, q in queries.items()
        },
        timeout_s=endpoint.timeout_s,
    )


def limits_for(spec: resources.LeafSiteSpec) -> readings.ReadingLimits:
    """What a site's readings are checked against: its own configuration."""
    return readings.ReadingLimits(
        staleness_limit_s=spec.staleness_limit_s,
        max_thermal_kw=spec.offtaker.max_thermal_kw,
        tank_capacity_kwh=spec.tank.capacity_kwh,
    )


def _reject(site: str, message: str) -> readings.Rejection:
    return readings.Rejection(site=site, kind=readings.RejectionKind.UNAVAILABLE, message=message)


async def read_token(api: client.KubeApi, ref: resources.SecretKeyRef) -> str:
    """The bearer token in a Secret. Raises ValueError saying what is wrong, in words."""
    path = client.path_for("", "v1", "secrets", namespace=ref.namespace, name=ref.name)
    try:
        secret = await api.get(path)
    except client.KubeAPIError as err:
        raise ValueError(f"token Secret {ref.namespace}/{ref.name} unreadable: {err}") from err
    encoded = (secret.get("data") or {}).get(ref.key)
    if not isinstance(encoded, str):
        raise ValueError(f"token Secret {ref.namespace}/{ref.name} has no key {ref.key!r}")
    try:
        # A token saved with `echo` ends in a newline; that is not part of the token.
        return base64.b64decode(encoded, validate=True).decode().strip()
    except (binascii.Error, UnicodeDecodeError) as err:
        raise ValueError(f"token in Secret {ref.namespace}/{ref.name} is not valid") from err


async def fetch_results(
    api: client.KubeApi,
    leafsites: Sequence[resources.LeafSite],
    now_s: float,
    *,
    timeout_s: float,
    factory: SourceFactory = default_source,
) -> dict[str, Result]:
    """One reading or rejection per LeafSite name, within ``timeout_s`` overall."""
    out: dict[str, Result] = {}
    groups: dict[Endpoint, list[resources.LeafSite]] = defaultdict(list)
    for ls in leafsites:
        name, metering = ls.metadata.name, ls.spec.metering
        http, prom = metering.http, metering.prometheus
        if http is not None:
            token = None
            if http.token_secret_ref is not None:
                try:
                    token = await read_token(api, http.token_secret_ref)
                except ValueError as err:
                    out[name] = _reject(name, str(err))
                    continue
            key = Endpoint(
                "http", http.url, http.timeout_seconds, token, http.insecure_skip_tls_verify
            )
            groups[key].append(ls)
        elif prom is not None:
            groups[Endpoint("prometheus", prom.url, prom.timeout_seconds)].append(ls)
    fetches = [
        _fetch_group(ep, members, now_s, timeout_s, factory) for ep, members in groups.items()
    ]
    for part in await asyncio.gather(*fetches):
        out.update(part)
    return out


async def _fetch_group(
    endpoint: Endpoint,
    members: Sequence[resources.LeafSite],
    now_s: float,
    timeout_s: float,
    factory: SourceFactory,
) -> dict[str, Result]:
    # Sites are asked for by their id at the source; answers are keyed back to LeafSite names.
    names_by_id: dict[str, list[str]] = defaultdict(list)
    limits: dict[str, readings.ReadingLimits] = {}
    queries: dict[str, resources.PrometheusQueries] = {}
    for ls in members:
        http = ls.spec.metering.http
        prom = ls.spec.metering.prometheus
        site_id = http.site_id if http is not None else ls.metadata.name
        names_by_id[site_id].append(ls.metadata.name)
        limits[site_id] = limits_for(ls.spec)
        if prom is not None:
            queries[site_id] = prom.queries
    try:
        src = factory(endpoint, queries)
    except ValueError as err:
        return {n: _reject(n, str(err)) for names in names_by_id.values() for n in names}
    except Exception as err:  # a source must never stop planning; it is logged as a bug
        log.exception("metering source not made: endpoint=%s", endpoint.url)
        return {
            n: _reject(n, f"metering source failed: {err}")
            for names in names_by_id.values()
            for n in names
        }
    try:
        got = await asyncio.wait_for(src.fetch(limits, now_s), timeout_s)
    except TimeoutError:
        got = {i: _reject(i, f"no answer within {timeout_s:g}s") for i in names_by_id}
    except Exception as err:  # a source must never stop planning; it is logged as a bug
        log.exception("metering source failed: endpoint=%s", endpoint.url)
        got = {i: _reject(i, f"metering source failed: {err}") for i in names_by_id}
    finally:
        try:
            await src.aclose()
        except Exception:  # closing is housekeeping: the readings are already in
            log.exception("metering source not closed: endpoint=%s", endpoint.url)
    out: dict[str, Result] = {}
    for site_id, names in names_by_id.items():
        found = got.get(site_id) if isinstance(got, Mapping) else None
        result = (
            found
            if isinstance(found, readings.SiteReading | readings.Rejection)
            else _reject(site_id, "the source returned nothing usable for it")
        )
        for name in names:
            out[name] = result
    return out
