"""Every OpenTelemetry Collector config the project ships passes the real upstream collector's
`otelcol validate` (../shared/tools/otelcol: core v1.62 / components v0.156): the static
gateway example and the gateway and agent configs the chart renders for every values file in
helm/otel-rl/ci/. The env the chart's docs give those pods is set (the bearer token, the node
name from the downward API), as it is in the cluster."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
import yaml
from conftest import ROOT

sys.path.insert(0, str(ROOT / "helm"))
import render_examples  # noqa: E402

OTELCOL = ROOT.parent / "shared" / "tools" / "otelcol" / "otelcol"
ENV = {**os.environ, "OTEL_RL_TOKEN": "t0ken", "K8S_NODE_NAME": "node-1", "MY_POD_IP": "127.0.0.1"}

_needs_otelcol = pytest.mark.skipif(not OTELCOL.exists(), reason=f"the upstream collector is not at {OTELCOL}")


def _validate(config_text: str, tmp_path, name: str) -> None:
    path = tmp_path / f"{name}.yaml"
    path.write_text(config_text)
    proc = subprocess.run([str(OTELCOL), "validate", "--config", str(path)], capture_output=True, text=True,
                          timeout=120, env=ENV)
    assert proc.returncode == 0, f"{name}: {proc.stderr[-2000:]}"


def _relays(values: dict) -> dict[str, str]:
    pytest.importorskip("helm_python")
    docs = [d for d in yaml.safe_load_all(render_examples.render(values)) if d]
    return {d["metadata"]["name"]: d["data"]["relay"] for d in docs
            if d["kind"] == "ConfigMap" and "relay" in d.get("data", {})}


@_needs_otelcol
def test_the_static_gateway_example_validates(tmp_path):
    _validate((ROOT / "collector" / "otelcol-gateway.yaml").read_text(), tmp_path, "otelcol-gateway")


@_needs_otelcol
@pytest.mark.parametrize("name", list(render_examples.value_sets()))
def test_every_rendered_gateway_and_agent_config_validates(tmp_path, name):
    values = dict(render_examples.value_sets()[name])
    # every values file with the gateway and the agent on, so each combination of auth/TLS is checked
    values.update(gateway={**values.get("gateway", {}), "enabled": True},
                  agent={**values.get("agent", {}), "enabled": True})
    relays = _relays(values)
    assert len(relays) == 2, relays.keys()
    for config_name, text in relays.items():
        _validate(text, tmp_path, config_name)


def test_names_match_between_the_chart_and_the_shipped_configs():
    relays = _relays(render_examples.value_sets()["full"])
    gateway = yaml.safe_load(relays["rl-otel-rl-otelcol-gateway"])
    agent = yaml.safe_load(relays["rl-otel-rl-otelcol-agent"])
    static = yaml.safe_load((ROOT / "collector" / "otelcol-gateway.yaml").read_text())
    headless = "rl-otel-rl-headless.observability.svc.cluster.local"  # release rl, as docs/deploy.md installs it
    assert gateway["exporters"]["loadbalancing"]["resolver"]["dns"]["hostname"] == headless
    assert static["exporters"]["loadbalancing"]["resolver"]["dns"]["hostname"] == headless
    # with auth and TLS on (full values): the token is sent and the server certificate is verified
    otlp = gateway["exporters"]["loadbalancing"]["protocol"]["otlp"]
    assert otlp["tls"] == {"ca_file": "/etc/otel-rl/tls/ca.crt"}
    assert otlp["headers"] == {"authorization": "Bearer ${env:OTEL_RL_TOKEN}"}
    assert agent["exporters"]["otlp"]["tls"] == {"ca_file": "/etc/otel-rl/tls/ca.crt"}
    # the agent forwards to the gateway's Service (the upstream chart installed as otelcol-gateway)
    assert agent["exporters"]["otlp"]["endpoint"] == \
        "otelcol-gateway-opentelemetry-collector.observability.svc.cluster.local:4317"
    # without auth/TLS (default values): plaintext, no header
    plain = yaml.safe_load(_relays({"gateway": {"enabled": True}})["rl-otel-rl-otelcol-gateway"])
    assert plain["exporters"]["loadbalancing"]["protocol"]["otlp"]["tls"] == {"insecure": True}
    assert "headers" not in plain["exporters"]["loadbalancing"]["protocol"]["otlp"]


@pytest.mark.parametrize("name", list(render_examples.value_sets()))
def test_check_config_accepts_every_shipped_collector_config(tmp_path, name):
    """`otel-rl check-config` validates collector configs too: the example and the one the chart
    renders for every values file."""
    docs = [d for d in yaml.safe_load_all(render_examples.render(render_examples.value_sets()[name])) if d]
    (rendered,) = [d["data"]["collector.yaml"] for d in docs if d["kind"] == "ConfigMap" and "collector.yaml" in d["data"]]
    # the Secrets the chart mounts (token, TLS pair, API keys), as files under tmp_path
    import re

    for mounted in set(re.findall(r"(/(?:var/run/secrets|etc)/[\w./-]+)", rendered)):
        local = tmp_path / mounted.lstrip("/")
        local.parent.mkdir(parents=True, exist_ok=True)
        local.write_text("secret\n")
        rendered = rendered.replace(mounted, str(local))
    path = tmp_path / "collector.yaml"
    path.write_text(rendered)
    for config in (path, ROOT / "collector" / "collector.example.yaml"):
        proc = subprocess.run([sys.executable, "-m", "otel_rl.cli", "check-config", str(config)], capture_output=True,
                              text=True, timeout=120)
        assert proc.returncode == 0 and "collector config: valid" in proc.stdout, proc.stderr[-2000:]


def test_check_config_reports_a_bad_collector_config(tmp_path):
    path = tmp_path / "bad.yaml"
    path.write_text("receivers: {http: {port: 4318}}\nreduce: {gauge: median}\n")
    proc = subprocess.run([sys.executable, "-m", "otel_rl.cli", "check-config", str(path)], capture_output=True,
                          text=True, timeout=120)
    assert proc.returncode == 2
    assert "reduce.gauge: 'median' is not allowed; allowed: 'mean', 'max', 'min', 'sum', 'none'" in proc.stderr
