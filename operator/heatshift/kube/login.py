"""Logging in to the cluster the way kubectl does: the one login of every heatshift command.

Which cluster, in the order controller-runtime (and so most operators) uses:

1. ``--kubeconfig FILE``: that file alone;
2. else ``$KUBECONFIG``: its files merged like kubectl merges them (the first file to name a
   cluster, user or context, or to set current-context, wins);
3. else the pod's service account (in-cluster), unless ``--context`` asks for a kubeconfig;
4. else ``~/.kube/config``.

``--context NAME`` picks a context of that kubeconfig instead of its current-context.

The kubeconfig is read and the credentials are kept by ``kubernetes_asyncio``: token,
tokenFile, client certificates by path (relative to the file that names them) or inline,
basic auth, exec plugins, the OIDC and GCP auth-providers, insecure-skip-tls-verify,
tls-server-name, proxy-url, and the service-account token the kubelet rotates. What the library
leaves out is filled here, thinly:

- an exec plugin's credential is kept until it expires, then the plugin runs again (the
  library runs it on every load, or on a polling timer); after a 401 it runs once more;
- a relative exec command with a slash is found beside its kubeconfig, as client-go does;
- tokenFile and auth-provider tokens are read again every minute (client-go re-reads a
  tokenFile; the library reads it once);
- the first file of ``$KUBECONFIG`` that sets current-context wins (the library takes the last);
- every failure is one :class:`client.KubeCredentialError` line naming the kubeconfig user and
  what failed, never a silent anonymous request.

heatshift never writes the kubeconfig (a refreshed OIDC token lives in memory only).
Called by ``heatshift run`` (:mod:`heatshift.handlers`, which also hands the credential to Kopf),
``heatshift plan`` (:mod:`heatshift.cli`) and ``heatshift metering-sim``
(:mod:`heatshift.metering.server`).
"""

from __future__ import annotations

import asyncio
import dataclasses
import datetime
import logging
import os
import time
from collections.abc import Mapping
from pathlib import Path
from types import TracebackType
from typing import Any

import yaml
from kubernetes_asyncio import client as k8s
from kubernetes_asyncio.config import dateutil, exec_provider, incluster_config, kube_config
from kubernetes_asyncio.config.config_exception import ConfigException

from heatshift.kube import client

log = logging.getLogger(__name__)

REREAD_S = 60.0
"""How often a tokenFile or an auth-provider's token is looked at again."""
SERVICE_ACCOUNT_DIR = Path("/var/run/secrets/kubernetes.io/serviceaccount")
DEFAULT_KUBECONFIG = Path("~/.kube/config")
_FAILURES = (ConfigException, OSError, ValueError, KeyError, TypeError, AssertionError)
"""What the library raises on a kubeconfig or credential it cannot use (it asserts, too)."""


@dataclasses.dataclass(frozen=True)
class Credential:
    """The credential of the moment, for a client that takes plain fields (Kopf)."""

    server: str
    ca_path: str | None
    insecure: bool
    scheme: str | None
    token: str | None
    certificate_path: str | None
    private_key_path: str | None
    proxy_url: str | None
    expiration: datetime.datetime | None
    """When the token stops being valid (an exec plugin's expirationTimestamp), if known."""


def _expired(expiry: datetime.datetime) -> bool:
    """The library's rule: a credential that expires within the skew counts as expired."""
    if expiry.tzinfo is None:
        expiry = expiry.replace(tzinfo=datetime.UTC)
    now = datetime.datetime.now(datetime.UTC)
    return expiry - kube_config.EXPIRY_SKEW_PREVENTION_DELAY <= now


def _plain(item: object) -> Any:
    """A kubeconfig entry as a dict: the library wraps merged entries in ConfigNodes."""
    return item.value if isinstance(item, kube_config.ConfigNode) else item


def _one_line(err: BaseException) -> str:
    if isinstance(err, OSError) and err.filename and err.strerror:
        return f"cannot read {err.filename}: {err.strerror}"
    text = " ".join(str(err).split())
    missing = text.removeprefix("File does not exists: ")  # the library's words for a path
    if missing != text:
        return f"{missing} does not exist"
    return text or type(err).__name__


class _Loader(kube_config.KubeConfigLoader):
    """The library's loader with exec plugins run only when their credential expired."""

    renew_exec = False
    """Run the plugin even though its credential has not expired (after a 401)."""
    exec_token: str | None = None

    async def load_from_exec_plugin(self) -> bool:
        assert self._user is not None
        expiry: datetime.datetime | None = getattr(self, "exec_plugin_expiry", None)
        fresh = expiry is None or not _expired(expiry)
        if self.exec_token is not None and not self.renew_exec and fresh:
            self.token = self.exec_token
            return True
        self.renew_exec = False
        provider = exec_provider.ExecProvider(self._user["exec"])
        command = provider.args[0]
        if "/" in command and not os.path.isabs(command):
            provider.args[0] = os.path.join(self._get_base_path(self._user.path), command)
        try:
            status = await provider.run()
        except FileNotFoundError as err:
            raise ConfigException(f"exec plugin {command!r} not found") from err
        except PermissionError as err:
            raise ConfigException(f"exec plugin {command!r} cannot be run: {err}") from err
        except ConfigException as err:
            raise ConfigException(f"exec plugin {command!r} failed: {err}") from err
        if not isinstance(status, Mapping):
            raise ConfigException(f"exec plugin {command!r} returned no status")
        token = status.get("token")
        if token:
            self.token = self.exec_token = f"Bearer {token}"
            stamp = status.get("expirationTimestamp")
            if stamp:
                self.exec_plugin_expiry = dateutil.parse_rfc3339(stamp)
            elif hasattr(self, "exec_plugin_expiry"):
                del self.exec_plugin_expiry
            return True
        if status.get("clientCertificateData") and status.get("clientKeyData"):
            # A certificate rather than a token: TLS is set up once, from the first one.
            if "cert_file" not in self.__dict__:
                # Set as the library's own exec support does; _load_cluster_info keeps them.
                cert = _temp_file(status["clientCertificateData"], self._temp_file_path)
                key = _temp_file(status["clientKeyData"], self._temp_file_path)
                self.__dict__.update(cert_file=cert, key_file=key)
            return True
        raise ConfigException(f"exec plugin {command!r} returned neither a token nor a certificate")


async def _load_and_set(loader: _Loader, configuration: k8s.Configuration) -> None:
    await loader.load_and_set(configuration)
    # A tokenFile is taken with its trailing newline, which no header may carry: kubectl
    # strips it.
    header = configuration.api_key.get("BearerToken")
    if isinstance(header, str):
        configuration.api_key["BearerToken"] = header.strip()


def _temp_file(pem: str, directory: str | None) -> str:
    found = kube_config.FileOrData(
        {"data": pem},
        None,
        data_key_name="data",
        base64_file_content=False,
        temp_file_path=directory,
    ).as_file()
    assert found is not None
    return found


class Session:
    """A logged-in ApiClient, the :class:`client.Client` facade on it, and its renewal."""

    def __init__(
        self,
        configuration: k8s.Configuration,
        who: str,
        loader: _Loader | None = None,
    ) -> None:
        self.configuration = configuration
        self.who = who
        self._loader = loader
        self._loaded_at = time.monotonic()
        self._lock = asyncio.Lock()
        if loader is not None:
            configuration.refresh_api_key_hook = self._hook
        self.api = client.Client(k8s.ApiClient(configuration), self)

    async def __aenter__(self) -> Session:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        await self.api.aclose()

    async def _hook(self, configuration: k8s.Configuration) -> None:
        """Before every request (the library's hook): an expired credential is fetched again."""
        assert self._loader is not None
        loader = self._loader

        def due() -> bool:
            expiry: datetime.datetime | None = getattr(loader, "exec_plugin_expiry", None)
            stale = time.monotonic() - self._loaded_at >= REREAD_S
            return stale or (expiry is not None and _expired(expiry))

        if due():
            async with self._lock:
                if due():  # not done meanwhile by a request that waited for the lock
                    await self._load()

    async def _load(self) -> None:
        assert self._loader is not None
        try:
            await _load_and_set(self._loader, self.configuration)
        except _FAILURES as err:
            raise client.KubeCredentialError(f"{self.who}: {_one_line(err)}") from err
        self._loaded_at = time.monotonic()

    async def renew(self) -> bool:
        """After a 401: run the exec plugin again, read the token file again."""
        if self._loader is None:
            return False  # in-cluster: the library re-reads the rotated token by itself
        async with self._lock:
            self._loader.renew_exec = True
            await self._load()
        return True

    async def credential(self) -> Credential:
        """The credential to use now (fetched again if it expired)."""
        config = self.configuration
        header = await config.get_api_key_with_prefix("BearerToken")
        scheme, _, token = (header or "").partition(" ")
        expiry = getattr(self._loader, "exec_plugin_expiry", None)
        return Credential(
            server=str(config.host),
            ca_path=config.ssl_ca_cert,
            insecure=not config.verify_ssl,
            scheme=scheme or None,
            token=token or None,
            certificate_path=config.cert_file,
            private_key_path=config.key_file,
            proxy_url=config.proxy,
            expiration=expiry if isinstance(expiry, datetime.datetime) else None,
        )


def _kubeconfig_paths(
    kubeconfig: Path | None, context: str | None, environ: Mapping[str, str]
) -> list[Path] | None:
    """The kubeconfig files to merge, or None for the in-cluster login."""
    if kubeconfig is not None:
        path = kubeconfig.expanduser()
        if not path.is_file():
            raise client.KubeCredentialError(f"kubeconfig {kubeconfig} does not exist")
        return [path]
    listed = [Path(p).expanduser() for p in environ.get("KUBECONFIG", "").split(os.pathsep) if p]
    if listed:
        found = [p for p in listed if p.is_file()]
        if not found:
            raise client.KubeCredentialError(
                f"none of the files in KUBECONFIG exists: {environ['KUBECONFIG']}"
            )
        return found
    if context is None and environ.get(incluster_config.SERVICE_HOST_ENV_NAME):
        return None
    home = DEFAULT_KUBECONFIG.expanduser()
    if not home.is_file():
        raise client.KubeCredentialError(
            "no cluster to log in to: no --kubeconfig, no KUBECONFIG, not in a pod, and no "
            f"{DEFAULT_KUBECONFIG}"
        )
    return [home]


def _names(merged: Mapping[str, Any], section: str) -> list[str]:
    entries = (_plain(item) for item in merged.get(section) or [])
    return [str(e.get("name")) for e in entries if isinstance(e, Mapping)]


async def _from_kubeconfig(paths: list[Path], context: str | None, temp_dir: str | None) -> Session:
    where = ":".join(str(p) for p in paths)
    try:
        merger = kube_config.KubeConfigMerger(os.pathsep.join(str(p) for p in paths))
        files = [c for c in merger.config_files.values() if isinstance(c, Mapping)]
        merged = merger.config
        if merged is None or not files:
            raise ConfigException("no kubeconfig in it")
    except (yaml.YAMLError, *_FAILURES) as err:
        raise client.KubeCredentialError(f"kubeconfig {where}: {_one_line(err)}") from err
    # kubectl: the first file that sets current-context wins.
    name = context or next((c["current-context"] for c in files if c.get("current-context")), None)
    if not name:
        raise client.KubeCredentialError(f"kubeconfig {where} sets no current-context")
    entries = (_plain(c) for c in merged.value.get("contexts") or [])
    contexts = {str(c.get("name")): c for c in entries if isinstance(c, Mapping)}
    if name not in contexts:
        known = ", ".join(sorted(contexts)) or "none"
        raise client.KubeCredentialError(
            f"kubeconfig {where} has no context named {name!r} (contexts: {known})"
        )
    ctx = contexts[name].get("context") or {}
    user = ctx.get("user")
    who = f"kubeconfig user {user!r} (context {name!r})"
    if user and user not in _names(merged.value, "users"):
        # The library would go on without credentials: an anonymous request, then a 401.
        raise client.KubeCredentialError(f"{who}: no user of that name in {where}")
    if ctx.get("cluster") not in _names(merged.value, "clusters"):
        raise client.KubeCredentialError(
            f"kubeconfig {where}: context {name!r} names cluster {ctx.get('cluster')!r}, "
            "which it does not have"
        )
    configuration = k8s.Configuration()
    try:
        loader = _Loader(
            config_dict=merged,
            active_context=name,
            config_base_path=None,
            temp_file_path=temp_dir,
        )
        await _load_and_set(loader, configuration)
    except _FAILURES as err:
        raise client.KubeCredentialError(f"{who}: {_one_line(err)}") from err
    return Session(configuration, who, loader)


def _in_cluster(environ: Mapping[str, str]) -> Session:
    who = "the pod's service account"
    configuration = k8s.Configuration()
    try:
        incluster_config.InClusterConfigLoader(
            token_filename=str(SERVICE_ACCOUNT_DIR / "token"),
            cert_filename=str(SERVICE_ACCOUNT_DIR / "ca.crt"),
            environ=dict(environ),
        ).load_and_set(configuration)
    except _FAILURES as err:
        raise client.KubeCredentialError(f"{who}: {_one_line(err)}") from err
    return Session(configuration, who)


async def connect(
    kubeconfig: Path | None = None,
    context: str | None = None,
    *,
    environ: Mapping[str, str] | None = None,
    temp_dir: str | None = None,
) -> Session:
    """Log in as kubectl would with ``--kubeconfig`` and ``--context`` (both optional).

    Raises :class:`client.KubeCredentialError` (one line) when no credential can be had."""
    env = os.environ if environ is None else environ
    paths = _kubeconfig_paths(kubeconfig, context, env)
    if paths is None:
        return _in_cluster(env)
    return await _from_kubeconfig(paths, context, temp_dir)
