"""docs/deploy.md, section 5, as written: the official open-telemetry/opentelemetry-collector
chart installed with helm/upstream/<role>-values.yaml plus the `values.yaml` key the otel-rl chart
renders (the relay config as the upstream chart's `alternateConfig`, used as it is, with none of
its default Jaeger, Zipkin and Prometheus receivers or debug exporter merged in). The rendered
config passes the real otelcol's `validate`.

The upstream chart itself is not vendored here (it is another project's code): the test that
renders it reads it from ``OTEL_RL_UPSTREAM_CHART`` (a directory holding the chart's
``Chart.yaml``, e.g. from ``helm pull open-telemetry/opentelemetry-collector --untar``) and says
so when it is not set."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from conftest import ROOT

sys.path.insert(0, str(ROOT / "helm"))
import render_examples  # noqa: E402

OTELCOL = ROOT.parent / "shared" / "tools" / "otelcol" / "otelcol"
ENV = {**os.environ, "OTEL_RL_TOKEN": "t0ken", "K8S_NODE_NAME": "node-1", "MY_POD_IP": "127.0.0.1"}
UPSTREAM = os.environ.get("OTEL_RL_UPSTREAM_CHART")
ROLES = {"gateway": "rl-otel-rl-otelcol-gateway", "agent": "rl-otel-rl-otelcol-agent"}
VARIANTS = {"plain": {}, "auth+tls": {"auth": {"existingSecret": "otel-rl-token"},
                                       "tls": {"existingSecret": "otel-rl-tls"}}}


def _config_maps(values: dict) -> dict[str, dict]:
    pytest.importorskip("helm_python")
    values = {**values, "gateway": {"enabled": True}, "agent": {"enabled": True}}
    docs = [d for d in yaml.safe_load_all(render_examples.render(values)) if d]
    return {d["metadata"]["name"]: d["data"] for d in docs if d["kind"] == "ConfigMap" and "relay" in d["data"]}


def _validate(config: dict, tmp_path: Path, name: str) -> None:
    if not OTELCOL.exists():
        pytest.skip(f"the upstream collector is not at {OTELCOL}")
    path = tmp_path / f"{name}.yaml"
    path.write_text(yaml.safe_dump(config))
    proc = subprocess.run([str(OTELCOL), "validate", "--config", str(path)], capture_output=True, text=True,
                          timeout=120, env=ENV)
    assert proc.returncode == 0, f"{name}: {proc.stderr[-2000:]}"


@pytest.mark.parametrize("variant", list(VARIANTS))
def test_the_values_key_is_the_relay_config_as_alternate_config(variant):
    for role, name in ROLES.items():
        data = _config_maps(VARIANTS[variant])[name]
        assert yaml.safe_load(data["values.yaml"]) == {"alternateConfig": yaml.safe_load(data["relay"])}, role


@pytest.mark.parametrize("variant", list(VARIANTS))
def test_alternate_config_validates_and_answers_the_upstream_probes(tmp_path, variant):
    for role, name in ROLES.items():
        config = yaml.safe_load(_config_maps(VARIANTS[variant])[name]["values.yaml"])["alternateConfig"]
        # the upstream chart's liveness/readiness probes ask the health_check extension on 13133
        assert config["extensions"]["health_check"]["endpoint"].endswith(":13133")
        assert "health_check" in config["service"]["extensions"]
        _validate(config, tmp_path, f"{role}-{variant}")


def test_upstream_values_files_are_complete():
    for role in ROLES:
        values = yaml.safe_load((ROOT / "helm" / "upstream" / f"{role}-values.yaml").read_text())
        assert values["mode"] in ("deployment", "daemonset") and values["image"]["repository"]
        assert "config" not in values and "alternateConfig" not in values  # the config comes from the chart
        for port in ("jaeger-compact", "jaeger-thrift", "jaeger-grpc", "zipkin"):
            assert values["ports"][port] == {"enabled": False}, (role, port)
    agent = yaml.safe_load((ROOT / "helm" / "upstream" / "agent-values.yaml").read_text())
    assert {"name": "K8S_NODE_NAME", "valueFrom": {"fieldRef": {"fieldPath": "spec.nodeName"}}} in agent["extraEnvs"]


def test_deploy_md_uses_the_values_files_and_the_values_key():
    text = (ROOT / "docs" / "deploy.md").read_text()
    section = text[text.index("## 5."):text.index("## 6.")]
    for role, name in ROLES.items():
        assert f"kubectl -n observability get configmap {name} -o jsonpath='{{.data.values\\.yaml}}'" in section
        assert f"-f helm/upstream/{role}-values.yaml -f {role}-config.yaml" in section
    commands = section[section.index("```bash"):section.index("```", section.index("```bash") + 3)]
    assert "--set-file" not in commands and "config=" not in commands


@pytest.mark.skipif(not UPSTREAM, reason="set OTEL_RL_UPSTREAM_CHART to the official opentelemetry-collector "
                                         "chart's directory (helm pull open-telemetry/opentelemetry-collector --untar)")
@pytest.mark.parametrize("variant", list(VARIANTS))
def test_the_upstream_chart_renders_exactly_the_otel_rl_config(tmp_path, variant):
    import helm_python

    for role, name in ROLES.items():
        values = yaml.safe_load((ROOT / "helm" / "upstream" / f"{role}-values.yaml").read_text())
        values.update(yaml.safe_load(_config_maps(VARIANTS[variant])[name]["values.yaml"]))
        with helm_python.Chart.load(Path(UPSTREAM)) as chart:
            out = chart.render(values, name=f"otelcol-{role}", namespace="observability", is_install=True)
        docs = [d for text in out.values() for d in yaml.safe_load_all(text) if d]
        (config_map,) = [d for d in docs if d["kind"] == "ConfigMap"]
        relay = yaml.safe_load(config_map["data"]["relay"])
        assert relay == values["alternateConfig"], role  # nothing of the chart's defaults merged in
        (workload,) = [d for d in docs if d["kind"] == ("DaemonSet" if role == "agent" else "Deployment")]
        (container,) = workload["spec"]["template"]["spec"]["containers"]
        assert {p["containerPort"] for p in container["ports"]} >= {4317, 4318}
        assert not {6831, 14250, 14268, 9411} & {p["containerPort"] for p in container["ports"]}
        assert container["livenessProbe"]["httpGet"]["port"] == 13133
        _validate(relay, tmp_path, f"upstream-{role}-{variant}")
