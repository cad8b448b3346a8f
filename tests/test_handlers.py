"""The Kopf wiring's own pieces: the credential Kopf gets, the webhook server set-up, the
advertised URL."""

from __future__ import annotations

import datetime
import ssl
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import kopf
import pytest

import kube_fixtures as kf
from heatshift import handlers, tlscert
from heatshift import metrics as metrics_mod
from heatshift.kube import informer, login, view


def test_heatshifts_credential_becomes_kopfs_connection_info() -> None:
    expires = datetime.datetime(2030, 1, 1, tzinfo=datetime.UTC)
    credential = login.Credential(
        server="https://api.example:6443",
        ca_path="/ca.crt",
        insecure=False,
        scheme="Bearer",
        token="t",
        certificate_path="/client.crt",
        private_key_path="/client.key",
        proxy_url="http://proxy.example:3128",
        expiration=expires,
    )
    info = handlers.connection_info(credential)
    assert (info.server, info.ca_path, info.insecure) == (
        "https://api.example:6443",
        "/ca.crt",
        False,
    )
    assert info.as_http_headers() == {"Authorization": "Bearer t"}
    assert (info.certificate_path, info.private_key_path) == ("/client.crt", "/client.key")
    assert (info.proxy_url, info.expiration) == ("http://proxy.example:3128", expires)


def test_without_a_cert_dir_a_self_signed_certificate_is_made(tmp_path: Path) -> None:
    options = handlers.RunOptions(webhook_host="heatshift.example", webhook_port=9443)
    server = handlers._webhook_server(options, tmp_path)
    assert isinstance(server, kopf.WebhookServer)
    assert server.certfile == str(tmp_path / "tls.crt")
    assert server.host == "heatshift.example" and server.port == 9443
    # the pair is a usable serving certificate
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ctx.load_cert_chain(tmp_path / "tls.crt", tmp_path / "tls.key")


def test_a_mounted_certificate_is_used_as_it_is(tmp_path: Path) -> None:
    cert, key = tlscert.write_self_signed(tmp_path / "mounted", ["heatshift.svc"])
    options = handlers.RunOptions(webhook_cert_dir=tmp_path / "mounted")
    server = handlers._webhook_server(options, tmp_path / "scratch")
    assert isinstance(server, kopf.WebhookServer)
    assert (server.certfile, server.pkeyfile) == (str(cert), str(key))
    assert not (tmp_path / "scratch").exists()


@pytest.mark.asyncio
async def test_a_webhook_url_replaces_the_advertised_one() -> None:
    class Server:
        async def __call__(self, fn: Any) -> AsyncIterator[dict[str, str]]:
            yield {"url": "https://10.0.0.5:9443", "caBundle": "Q0E="}

    fixed = handlers._FixedURL(Server(), "https://heatshift.heatshift-system.svc:443/")  # type: ignore[arg-type]
    configs = [c async for c in fixed(lambda **_: None)]
    assert configs == [{"url": "https://heatshift.heatshift-system.svc:443", "caBundle": "Q0E="}]


def test_an_unreadable_policy_spec_replans_soon() -> None:
    assert (
        handlers._interval(
            {"planning": {"replanInterval": "10m"}, "namespaceSelector": {}, "selector": {}}
        )
        == 600.0
    )
    assert handlers._interval({"nonsense": True}) == handlers.RETRY_S


def test_replicas_started_alike_do_not_tie_for_peering_priority() -> None:
    # Kopf pauses every replica while two share a priority; a tie would stop all work.
    alike = handlers.RunOptions()
    assert len({handlers.peering_priority(alike) for _ in range(20)}) == 20
    assert handlers.peering_priority(handlers.RunOptions(priority=7)) == 7


def _memo() -> dict[str, Any]:
    state = handlers.State(
        options=handlers.RunOptions(),
        metrics=metrics_mod.Metrics(),
        session=None,  # type: ignore[arg-type]
    )
    return {"heatshift": state}


def test_an_unusable_leafsite_is_indexed_as_such_rather_than_lost() -> None:
    bad = kf.leafsite("bad")
    bad["spec"]["tank"] = "full"

    (record,) = handlers.view_leafsites(name="bad", body=kopf.Body(bad), memo=_memo()).values()

    assert record.resource is None and record.problem


# --- the webhook, in every replica --------------------------------------------------------------


def _webhook_memo(*objs: dict[str, Any], synced: bool = True) -> dict[str, Any]:
    """A replica whose HeatPolicy and Namespace informers hold ``objs`` (Kopf indexes play no
    part: a standby's are paused by peering)."""
    memo = _memo()
    found = informer.Informers(kf.FakeApi(), [], view.Heard())  # type: ignore[arg-type]
    for obj in objs:
        target = found.policies if obj["kind"] == "HeatPolicy" else found.namespaces
        target._put(obj)
        if synced:
            target.synced.set()
    memo["heatshift"].informers = found
    return memo


async def _admit(memo: dict[str, Any], obj: dict[str, Any]) -> Any:
    patch = kopf.Patch()
    await handlers.hold_jobs(body=kopf.Body(obj), patch=patch, memo=memo, logger=handlers.log)
    return dict(patch)


@pytest.mark.asyncio
async def test_every_replica_holds_new_work_from_its_own_informers() -> None:
    memo = _webhook_memo(
        kf.heatpolicy("batch", namespace_labels={"heat": "yes"}),
        kf.namespace("ml", {"heat": "yes"}),
        kf.namespace("web"),
    )
    assert memo["heatshift"].wake == {}  # no planning loop runs here: a standby

    assert await _admit(memo, kf.job("train", suspend=None, namespace="ml")) == {
        "spec": {"suspend": True}
    }
    # A namespace no policy selects, and one not seen (yet), are let through.
    assert await _admit(memo, kf.job("site", suspend=None, namespace="web")) == {}
    assert await _admit(memo, kf.job("gone", suspend=None, namespace="nowhere")) == {}


@pytest.mark.asyncio
async def test_an_invalid_policy_holds_nothing_and_the_valid_ones_still_do() -> None:
    broken = kf.heatpolicy("broken", match_labels={"team": "a"})
    broken["spec"]["planning"]["step"] = "often"
    memo = _webhook_memo(broken, kf.heatpolicy("batch"), kf.namespace("batch"))

    inputs = memo["heatshift"].informers.admission_inputs("batch")

    assert [p.metadata.name for p in inputs[0]] == ["batch"]
    assert await _admit(memo, kf.job("train", suspend=None)) == {"spec": {"suspend": True}}


@pytest.mark.asyncio
async def test_before_the_informers_have_listed_new_work_runs_unheld() -> None:
    # Compute never waits on heatshift: not knowing yet means it runs now, never refused.
    memo = _webhook_memo(kf.heatpolicy("batch"), kf.namespace("batch"), synced=False)
    assert await _admit(memo, kf.job("train", suspend=None)) == {}
