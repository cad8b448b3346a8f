"""Logging in like kubectl, for every command that talks to a cluster, against a fake API server.

Each kind of kubeconfig a kubectl user has (an exec plugin, an expiring exec plugin, a
tokenFile, certificates by relative path with tls-server-name, a KUBECONFIG of two files) is
used by each command's own login path: ``heatshift plan --dry-run``, ``heatshift metering-sim
--kubeconfig`` (its cluster load) and ``heatshift run`` (the credential handed to Kopf). Then
what kubectl users rely on beyond that: expiry and renewal, token rotation, --context, inline
certificates, and one plain line for every credential problem.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import dataclasses
import datetime
import ssl
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

import aiohttp
import kopf
import pytest
import pytest_asyncio
from kubernetes_asyncio.config import incluster_config, kube_config

import fake_apiserver as fake
from heatshift import cli, handlers
from heatshift import metrics as metrics_mod
from heatshift.kube import client, cluster_load, login
from heatshift.metering import server as metering_server


@pytest.fixture(autouse=True)
def _no_kubeconfig_from_the_machine(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.delenv("KUBECONFIG", raising=False)
    monkeypatch.delenv("KUBERNETES_SERVICE_HOST", raising=False)
    monkeypatch.setenv("HOME", str(tmp_path / "home"))


@dataclasses.dataclass
class Setup:
    """What a case wrote: the flags to pass, and the tokens the server must have seen."""

    args: list[str]
    tokens: list[str | None]


Case = Callable[[Path, str, fake.Pki, pytest.MonkeyPatch], Setup]


def exec_plugin(tmp: Path, url: str, pki: fake.Pki, mp: pytest.MonkeyPatch) -> Setup:
    fake.write_plugin(tmp / "bin" / "get-token")
    # A relative command with a slash is found beside the kubeconfig, as client-go does.
    user = fake.exec_user(tmp / "runs", "bin/get-token", LIFETIME_S="3600")
    path = fake.write(tmp / "kubeconfig", fake.kubeconfig(url, user))
    return Setup(["--kubeconfig", str(path)], ["exec-1"])


def token_file(tmp: Path, url: str, pki: fake.Pki, mp: pytest.MonkeyPatch) -> Setup:
    (tmp / "creds").mkdir()
    (tmp / "creds" / "token").write_text("from-file\n")
    path = fake.write(tmp / "kubeconfig", fake.kubeconfig(url, {"tokenFile": "creds/token"}))
    return Setup(["--kubeconfig", str(path)], ["from-file"])


def relative_certificates(tmp: Path, url: str, pki: fake.Pki, mp: pytest.MonkeyPatch) -> Setup:
    # Paths relative to the kubeconfig's directory, as kubectl reads them.
    cluster = {"certificate-authority": "../pki/server/tls.crt"}
    user = {"client-certificate": "../pki/client/tls.crt", "client-key": "../pki/client/tls.key"}
    path = fake.write(tmp / "conf" / "kubeconfig", fake.kubeconfig(url, user, cluster=cluster))
    return Setup(["--kubeconfig", str(path)], [None])


def split_kubeconfig(tmp: Path, url: str, pki: fake.Pki, mp: pytest.MonkeyPatch) -> Setup:
    whole = fake.kubeconfig(url, {"token": "split-token"})
    first = {k: v for k, v in whole.items() if k != "users"}
    # The second file sets another current-context: the first file's wins, as in kubectl.
    second = {"users": whole["users"], "current-context": "elsewhere", "contexts": []}
    a = fake.write(tmp / "a" / "config", first)
    b = fake.write(tmp / "b" / "config", second)
    mp.setenv("KUBECONFIG", f"{a}:{tmp / 'missing'}:{b}")
    return Setup([], ["split-token"])


CASES: dict[str, tuple[Case, bool]] = {
    "exec-plugin": (exec_plugin, False),
    "token-file": (token_file, False),
    "relative-certificates": (relative_certificates, True),
    "split-kubeconfig": (split_kubeconfig, False),
}


async def plan_command(args: list[str], server: fake.FakeApiServer) -> None:
    status = await asyncio.to_thread(cli.main, ["plan", "--dry-run", *args])
    assert status == cli.EXIT_OK
    assert [s.path for s in server.seen] == ["/apis/heatshift.dev/v1alpha1/heatpolicies"]


async def metering_sim_command(args: list[str], server: fake.FakeApiServer) -> None:
    parser = argparse.ArgumentParser()
    metering_server.add_arguments(parser)
    parsed = parser.parse_args(args)
    async with await login.connect(parsed.kubeconfig, parsed.context) as session:
        found = await cluster_load.read_site_watts(session.api)
    assert found.watts == {}
    assert len(server.seen) == 4  # LeafSites, Nodes, Pods, Jobs


async def run_command(args: list[str], server: fake.FakeApiServer) -> None:
    """``heatshift run``'s login: the options, the session, the credential Kopf gets."""
    parsed = cli.build_parser().parse_args(["run", *args])
    options = handlers.RunOptions(kubeconfig=parsed.kubeconfig, context=parsed.context)
    async with await login.connect(options.kubeconfig, options.context) as session:
        state = handlers.State(options, metrics_mod.Metrics(), session=session)
        info = await handlers.login(memo=kopf.Memo(heatshift=state))
    # Kopf builds its session from these fields alone.
    connector = aiohttp.TCPConnector(ssl=info.as_ssl_context())
    async with (
        aiohttp.ClientSession(connector=connector, headers=info.as_http_headers()) as http,
        http.get(info.server + "/api/v1/namespaces") as response,
    ):
        assert response.status == 200


COMMANDS: dict[str, Callable[[list[str], fake.FakeApiServer], Awaitable[None]]] = {
    "plan": plan_command,
    "metering-sim": metering_sim_command,
    "run": run_command,
}


@pytest_asyncio.fixture
async def pki(tmp_path: Path) -> fake.Pki:
    return fake.make_pki(tmp_path / "pki")


@pytest.mark.asyncio
@pytest.mark.parametrize("command", COMMANDS)
@pytest.mark.parametrize("case", CASES)
async def test_every_command_logs_in_with(
    case: str,
    command: str,
    tmp_path: Path,
    pki: fake.Pki,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    build, tls = CASES[case]
    accepted = None if tls else {"exec-1", "from-file", "split-token"}
    server = fake.FakeApiServer(accepted=accepted)
    async with fake.serve(server, pki.server_context() if tls else None):
        setup = build(tmp_path, server.url, pki, monkeypatch)
        await COMMANDS[command](setup.args, server)
    assert server.seen
    assert set(server.tokens[:1]) == set(setup.tokens)


@pytest_asyncio.fixture
async def server() -> AsyncIterator[fake.FakeApiServer]:
    async with fake.serve(fake.FakeApiServer()) as found:
        yield found


def expiring(tmp: Path, url: str, lifetime_s: str | None, **env: str) -> Path:
    plugin = fake.write_plugin(tmp / "get-token")
    extra = {"LIFETIME_S": lifetime_s} if lifetime_s else {}
    user = fake.exec_user(tmp / "runs", str(plugin), **extra, **env)
    return fake.write(tmp / "kubeconfig", fake.kubeconfig(url, user))


@pytest.mark.asyncio
async def test_an_exec_token_is_kept_until_it_expires_then_fetched_again(
    server: fake.FakeApiServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(kube_config, "EXPIRY_SKEW_PREVENTION_DELAY", datetime.timedelta(0))
    path = expiring(tmp_path, server.url, "3")
    async with await login.connect(path) as session:
        await session.api.get("/api/v1/namespaces/a")
        await session.api.get("/api/v1/namespaces/b")
        await asyncio.sleep(3.2)  # past the expirationTimestamp
        await session.api.get("/api/v1/namespaces/c")
    assert server.tokens == ["exec-1", "exec-1", "exec-2"]
    assert (tmp_path / "runs").read_text() == "2"


@pytest.mark.asyncio
async def test_kopf_logs_in_again_with_a_fresh_exec_token(
    server: fake.FakeApiServer, tmp_path: Path
) -> None:
    path = expiring(tmp_path, server.url, "900")
    async with await login.connect(path) as session:
        state = handlers.State(handlers.RunOptions(), metrics_mod.Metrics(), session=session)
        memo = kopf.Memo(heatshift=state)
        first = await handlers.login(memo=memo)
        # Kopf asks again when the expiration passes, or after a 401.
        second = await handlers.login(memo=memo)
    assert (first.token, second.token) == ("exec-1", "exec-2")
    assert first.expiration is not None
    assert first.expiration - fake.now_plus(900) < datetime.timedelta(seconds=5)


@pytest.mark.asyncio
async def test_a_refused_exec_token_is_renewed_once(
    server: fake.FakeApiServer, tmp_path: Path
) -> None:
    server.accepted = {"exec-2"}  # the first token was revoked before its time
    path = expiring(tmp_path, server.url, None)
    async with await login.connect(path) as session:
        assert await session.api.get("/api/v1/nodes") == {
            "kind": "List",
            "metadata": {},
            "items": [],
        }
        server.accepted = set()
        with pytest.raises(client.KubeCredentialError) as caught:
            await session.api.get("/api/v1/nodes")
    assert server.tokens == ["exec-1", "exec-2", "exec-2", "exec-3"]
    assert caught.value.status == 401 and not caught.value.retryable
    assert "kubeconfig user 'alice' (context 'lab'): the API server refused" in str(caught.value)


@pytest.mark.asyncio
async def test_a_rotated_token_file_is_read_again(
    server: fake.FakeApiServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "token").write_text("first\n")
    path = fake.write(tmp_path / "kubeconfig", fake.kubeconfig(server.url, {"tokenFile": "token"}))
    async with await login.connect(path) as session:
        await session.api.get("/api/v1/nodes")
        (tmp_path / "token").write_text("second\n")
        await session.api.get("/api/v1/nodes")  # within the re-read interval
        monkeypatch.setattr(login, "REREAD_S", 0.0)
        await session.api.get("/api/v1/nodes")
    assert server.tokens == ["first", "first", "second"]


@pytest.mark.asyncio
async def test_the_in_cluster_service_account_token_is_followed_as_it_rotates(
    tmp_path: Path, pki: fake.Pki, monkeypatch: pytest.MonkeyPatch
) -> None:
    account = tmp_path / "serviceaccount"
    account.mkdir()
    (account / "token").write_text("sa-1")
    (account / "ca.crt").write_bytes(pki.server_cert.read_bytes())
    monkeypatch.setattr(login, "SERVICE_ACCOUNT_DIR", account)
    # The library reads the file again once a minute; here at every request.
    monkeypatch.setattr(incluster_config, "TOKEN_REFRESH_PERIOD", datetime.timedelta(0))
    tls = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    tls.load_cert_chain(pki.server_cert, pki.server_key)
    async with fake.serve(fake.FakeApiServer(), tls) as server:
        port = server.url.rsplit(":", 1)[1]
        env = {"KUBERNETES_SERVICE_HOST": "127.0.0.1", "KUBERNETES_SERVICE_PORT": port}
        async with await login.connect(environ=env) as session:
            assert session.who == "the pod's service account"
            await session.api.get("/api/v1/nodes")
            (account / "token").write_text("sa-2")  # the kubelet rotated it
            await session.api.get("/api/v1/nodes")
    assert server.tokens == ["sa-1", "sa-2"]


@pytest.mark.asyncio
async def test_context_picks_the_user_and_ignores_in_cluster(
    server: fake.FakeApiServer, tmp_path: Path
) -> None:
    config = fake.kubeconfig(server.url, {"token": "current"})
    config["users"].append({"name": "bob", "user": {"token": "bobs"}})
    config["contexts"].append({"name": "other", "context": {"cluster": "lab", "user": "bob"}})
    home = fake.write(tmp_path / "home" / ".kube" / "config", config)
    pod = {"KUBERNETES_SERVICE_HOST": "10.0.0.1", "KUBERNETES_SERVICE_PORT": "443"}
    async with await login.connect(context="other", environ=pod) as session:
        await session.api.get("/api/v1/nodes")
    async with await login.connect(home) as session:
        await session.api.get("/api/v1/nodes")
    assert server.tokens == ["bobs", "current"]


@pytest.mark.asyncio
async def test_inline_certificates_insecure_skip_and_tls_server_name(
    tmp_path: Path, pki: fake.Pki
) -> None:
    def b64(path: Path) -> str:
        return base64.b64encode(path.read_bytes()).decode()

    user = {"client-certificate-data": b64(pki.client_cert), "client-key-data": b64(pki.client_key)}
    async with fake.serve(fake.FakeApiServer(), pki.server_context()) as server:
        # By the name in the server's certificate, not the address dialled.
        by_name = server.url.replace("127.0.0.1", "localhost")
        named = {"certificate-authority-data": b64(pki.server_cert), "tls-server-name": "kube.test"}
        path = fake.write(tmp_path / "a", fake.kubeconfig(by_name, user, cluster=named))
        async with await login.connect(path) as session:
            await session.api.get("/api/v1/nodes")
        unchecked = {"insecure-skip-tls-verify": True}
        path = fake.write(tmp_path / "b", fake.kubeconfig(by_name, user, cluster=unchecked))
        async with await login.connect(path) as session:
            await session.api.get("/api/v1/nodes")
        wrong = {"certificate-authority-data": b64(pki.client_cert)}  # not the server's CA
        path = fake.write(tmp_path / "c", fake.kubeconfig(server.url, user, cluster=wrong))
        async with await login.connect(path) as session:
            with pytest.raises(client.KubeAPIError, match="certificate verify failed"):
                await session.api.get("/api/v1/nodes")
    assert len(server.seen) == 2


def _one_line(text: str) -> str:
    lines = text.strip().splitlines()
    assert len(lines) == 1, text
    return lines[0]


@pytest.mark.parametrize(
    ("make", "expected"),
    [
        (
            lambda tmp, url: fake.write(
                tmp / "k", fake.kubeconfig(url, fake.exec_user(tmp / "n", "no-such-plugin"))
            ),
            "kubeconfig user 'alice' (context 'lab'): exec plugin 'no-such-plugin' not found",
        ),
        (
            lambda tmp, url: expiring(tmp, url, None, FAIL="1"),
            "kubeconfig user 'alice' (context 'lab'): exec plugin '{tmp}/get-token' failed: "
            "exec: process returned 1. token service said no",
        ),
        (
            lambda tmp, url: fake.write(tmp / "k", fake.kubeconfig(url, {"tokenFile": "gone"})),
            "kubeconfig user 'alice' (context 'lab'): "
            "cannot read {tmp}/gone: No such file or directory",
        ),
        (
            lambda tmp, url: fake.write(tmp / "k", {**fake.kubeconfig(url, {}), "users": []}),
            "kubeconfig user 'alice' (context 'lab'): no user of that name in {tmp}/k",
        ),
        (
            lambda tmp, url: fake.write(
                tmp / "k", {**fake.kubeconfig(url, {}), "current-context": "x"}
            ),
            "kubeconfig {tmp}/k has no context named 'x' (contexts: lab)",
        ),
        (lambda tmp, url: tmp / "absent", "kubeconfig {tmp}/absent does not exist"),
    ],
    ids=[
        "plugin-missing",
        "plugin-failed",
        "token-file-gone",
        "no-such-user",
        "no-such-context",
        "no-file",
    ],
)
def test_a_credential_problem_is_one_line_naming_the_user_for_every_command(
    make: Callable[[Path, str], Path],
    expected: str,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    path = make(tmp_path, "http://127.0.0.1:9")  # never reached: the login fails first
    message = expected.format(tmp=tmp_path)
    assert cli.main(["plan", "--dry-run", "--kubeconfig", str(path)]) == cli.EXIT_FAILURE
    assert _one_line(capsys.readouterr().err) == f"heatshift plan: error: cannot log in: {message}"
    assert cli.main(["run", "--standalone", "--kubeconfig", str(path)]) == cli.EXIT_FAILURE
    assert _one_line(capsys.readouterr().err) == f"heatshift run: error: cannot log in: {message}"
    assert cli.main(["metering-sim", "--port", "0", "--kubeconfig", str(path)]) == cli.EXIT_USAGE
    err = capsys.readouterr().err
    assert _one_line(err) == f"heatshift metering-sim: cannot log in: {message}"


@pytest.mark.asyncio
async def test_a_token_the_server_refuses_says_who_and_sends_nothing_anonymous(
    server: fake.FakeApiServer, tmp_path: Path
) -> None:
    server.accepted = {"right"}
    path = fake.write(tmp_path / "k", fake.kubeconfig(server.url, {"token": "wrong"}))
    async with await login.connect(path) as session:
        with pytest.raises(client.KubeCredentialError, match="kubeconfig user 'alice'"):
            await session.api.get("/api/v1/nodes")
    # Renewed once (a static token stays the same), never without it.
    assert server.tokens == ["wrong", "wrong"]


def test_metering_sim_cluster_load_logs_in_the_default_way(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """``--cluster-load`` (the reference meter as a pod, on its service account) logs in as
    every command does without flags: here $KUBECONFIG, whose absence is said at once."""
    monkeypatch.setenv("KUBECONFIG", str(tmp_path / "absent"))
    assert cli.main(["metering-sim", "--port", "0", "--cluster-load"]) == cli.EXIT_USAGE
    err = capsys.readouterr().err
    assert _one_line(err) == (
        "heatshift metering-sim: cannot log in: none of the files in KUBECONFIG exists: "
        f"{tmp_path}/absent"
    )
