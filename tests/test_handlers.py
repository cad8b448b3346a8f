"""The Kopf wiring's own pieces: credentials, the webhook server set-up, the advertised URL."""

from __future__ import annotations

import ssl
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import kopf
import pytest

from heatshift import handlers, tlscert


def test_kopf_credentials_become_the_clients_connection() -> None:
    info = kopf.ConnectionInfo(
        server="https://api.example:6443",
        ca_path=Path("/ca.crt"),
        token="t",
        scheme="Bearer",
        certificate_data=b"cert",
        private_key_data=b"key",
    )
    conn = handlers.connection(info)
    assert conn.server == "https://api.example:6443"
    assert conn.ca_path == "/ca.crt"
    assert (conn.token, conn.scheme, conn.insecure) == ("t", "Bearer", False)
    assert (conn.certificate_data, conn.private_key_data) == (b"cert", b"key")


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


def test_in_a_pod_the_service_account_token_file_is_followed(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    token_file = tmp_path / "token"
    token_file.write_text("sa-token\n")
    monkeypatch.setattr(handlers, "SERVICE_ACCOUNT_TOKEN", str(token_file))
    in_pod = kopf.ConnectionInfo(server="https://10.0.0.1", token="sa-token")
    from_kubeconfig = kopf.ConnectionInfo(server="https://10.0.0.1", token="user-token")
    assert handlers.connection(in_pod).token_path == str(token_file)
    assert handlers.connection(from_kubeconfig).token_path is None
