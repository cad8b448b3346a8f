"""``heatshift run`` and ``heatshift plan``: the flags the Helm chart and e2e suite rely on."""

from __future__ import annotations

import logging
import subprocess
import sys
from pathlib import Path

import pytest

from heatshift import cli, handlers


def test_run_defaults_match_the_chart_contract() -> None:
    args = cli.build_parser().parse_args(["run"])
    assert args.peering == "heatshift"
    assert args.standalone is False
    assert args.namespace is None
    assert (args.metrics_port, args.health_port, args.webhook_port) == (8080, 8081, 9443)
    assert args.webhook_cert_dir is None and args.webhook_url is None
    assert args.manage_webhook_config is False


def test_probe_requests_do_not_bury_the_cycle_lines(caplog: pytest.LogCaptureFixture) -> None:
    """Found running the chart's pods: the kubelet's probes every 5-10 s each logged an access
    line and a probe line, so `kubectl logs` showed little else."""
    before = {name: logging.getLogger(name).level for name in cli.PROBE_LOGGERS}
    try:
        cli.configure_logging("INFO")
        with caplog.at_level(logging.INFO):
            logging.getLogger("aiohttp.access").info('"GET /healthz HTTP/1.1" 200')
            logging.getLogger("kopf.activities.probe").info("Activity 'planner' succeeded.")
            logging.getLogger("heatshift.handlers").info("cycle policy=p held=1")
            logging.getLogger("aiohttp.access").warning("a probe failed")
        assert [r.getMessage() for r in caplog.records] == [
            "cycle policy=p held=1",
            "a probe failed",
        ]
    finally:
        for name, level in before.items():
            logging.getLogger(name).setLevel(level)


def test_run_help_documents_every_flag(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        cli.main(["run", "--help"])
    text = capsys.readouterr().out
    for flag in (
        "--peering",
        "--standalone",
        "--namespace",
        "--metrics-port",
        "--health-port",
        "--webhook-port",
        "--webhook-cert-dir",
        "--webhook-url",
        "--manage-webhook-config",
        "--kubeconfig",
        "--context",
        "/hold-jobs",
    ):
        assert flag in text, flag


def test_run_passes_its_flags_to_the_operator(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    seen: list[handlers.RunOptions] = []
    monkeypatch.setattr(handlers, "run", seen.append)
    kubeconfig = tmp_path / "config"

    status = cli.main(
        [
            "run",
            "--standalone",
            "--namespace=a",
            "--namespace=b",
            "--namespace=a",
            "--metrics-port=0",
            "--webhook-port=9999",
            f"--webhook-cert-dir={tmp_path}",
            "--webhook-url=https://heatshift.svc:443",
            "--manage-webhook-config",
            f"--kubeconfig={kubeconfig}",
            "--context=prod",
        ]
    )

    assert status == cli.EXIT_OK
    (options,) = seen
    assert options.namespaces == ("a", "b")
    assert options.standalone and options.manage_webhook_config
    assert options.metrics_port is None and options.health_port == 8081
    assert (options.webhook_port, options.webhook_cert_dir) == (9999, tmp_path)
    assert options.webhook_url == "https://heatshift.svc:443"
    assert (options.kubeconfig, options.context) == (kubeconfig, "prod")


@pytest.mark.parametrize("port", ["-1", "65536", "http"])
def test_bad_ports_are_usage_errors(port: str) -> None:
    with pytest.raises(SystemExit) as caught:
        cli.main(["run", "--metrics-port", port])
    assert caught.value.code == cli.EXIT_USAGE


def test_plan_only_dry_runs(capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["plan"]) == cli.EXIT_USAGE
    assert "only --dry-run is supported" in capsys.readouterr().err


def test_the_operator_starts_without_matplotlib() -> None:
    # Only `heatshift simulate --plot` draws; importing matplotlib at start costs half a second
    # and wants a writable config directory, which the chart's read-only root does not give.
    code = "import sys, heatshift.cli, heatshift.handlers; sys.exit('matplotlib' in sys.modules)"
    assert subprocess.run([sys.executable, "-c", code], check=False).returncode == 0
