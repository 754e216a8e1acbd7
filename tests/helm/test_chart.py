"""The Helm chart, rendered offline with Helm's own library (helm-python-sdk) and validated
strictly against the Kubernetes schemas (kubernetes-validate); no cluster needed."""

from __future__ import annotations

import sys

import pytest
import yaml
from conftest import ROOT

sys.path.insert(0, str(ROOT / "helm"))
import render_examples  # noqa: E402

helm_python = pytest.importorskip("helm_python")
kubernetes_validate = pytest.importorskip("kubernetes_validate")

CHART = ROOT / "helm" / "otel-rl"
K8S_VERSION = "1.30.0"
CRDS = {"ServiceMonitor"}  # not in the core schemas; checked by structure below


def render(values: dict | None = None) -> list[dict]:
    return [d for d in yaml.safe_load_all(render_examples.render(values or {})) if d]


def by_kind(docs: list[dict], kind: str) -> list[dict]:
    return [d for d in docs if d["kind"] == kind]


@pytest.mark.parametrize("name", list(render_examples.value_sets()))
def test_every_manifest_validates_strictly(name):
    docs = render(render_examples.value_sets()[name])
    assert docs
    for doc in docs:
        if doc["kind"] in CRDS:
            continue
        kubernetes_validate.validate(doc, K8S_VERSION, strict=True)


def test_committed_rendered_examples_are_current():
    assert render_examples.main.__module__ == "render_examples"
    stale = [n for n, v in render_examples.value_sets().items()
             if (CHART / "examples" / f"{n}.yaml").read_text() != render_examples.render(v)]
    assert not stale, f"run python helm/render_examples.py: {stale}"


def test_lint_has_no_errors():
    for values in render_examples.value_sets().values():
        report = helm_python.lint(CHART, values, strict=True)
        assert not report["errors"] and not [m for m in report["messages"] if m["severity"] >= 2], report


def test_default_objects_ports_probes_and_security():
    docs = render()
    (deploy,) = by_kind(docs, "Deployment")
    pod = deploy["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    assert {p["name"]: p["containerPort"] for p in container["ports"]} == {
        "otlp-grpc": 4317, "otlp-http": 4318, "health": 13133, "metrics": 9464}
    assert container["livenessProbe"]["httpGet"]["path"] == "/health"
    assert container["readinessProbe"]["httpGet"]["port"] == "health"
    assert container["readinessProbe"]["httpGet"]["path"] == "/ready"
    assert container["securityContext"]["readOnlyRootFilesystem"] is True
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert deploy["spec"]["template"]["metadata"]["annotations"]["prometheus.io/scrape"] == "true"
    services = {s["metadata"]["name"]: s for s in by_kind(docs, "Service")}
    assert {p["port"] for p in services["rl-otel-rl"]["spec"]["ports"]} == {4317, 4318, 9464}
    assert services["rl-otel-rl-headless"]["spec"]["clusterIP"] == "None"
    assert by_kind(docs, "PersistentVolumeClaim")[0]["spec"]["resources"]["requests"]["storage"] == "10Gi"
    assert by_kind(docs, "PodDisruptionBudget")


def test_rendered_collector_config_is_a_valid_collector_config():
    from otel_rl_collector import load_collector_config

    for values in render_examples.value_sets().values():
        (cm,) = [d for d in by_kind(render(values), "ConfigMap") if "collector.yaml" in d["data"]]
        cfg = yaml.safe_load(cm["data"]["collector.yaml"])
        for section in ("auth", "tls"):  # secret files exist only in the pod
            cfg.pop(section, None)
        parsed = load_collector_config(cfg)
        assert parsed.receivers.http.host == "0.0.0.0" and parsed.receivers.grpc.port == 4317


def test_secrets_come_from_existing_secrets_only():
    values = render_examples.value_sets()["full"]
    docs = render(values)
    (deploy,) = by_kind(docs, "Deployment")[:1]
    env = {e["name"]: e for e in deploy["spec"]["template"]["spec"]["containers"][0]["env"]}
    assert env["WANDB_API_KEY"]["valueFrom"]["secretKeyRef"] == {"name": "wandb-key", "key": "api-key"}
    assert env["SWANLAB_API_KEY"]["valueFrom"]["secretKeyRef"]["name"] == "swanlab-key"
    assert env["MLFLOW_TRACKING_TOKEN"]["valueFrom"]["secretKeyRef"]["optional"] is True
    volumes = {v["name"]: v for v in deploy["spec"]["template"]["spec"]["volumes"]}
    assert volumes["auth"]["secret"]["secretName"] == "otel-rl-token"
    assert volumes["tls"]["secret"]["secretName"] == "otel-rl-tls"
    # TLS on OTLP; the probes' own port stays plain HTTP (the kubelet sends no token, sees no data)
    assert deploy["spec"]["template"]["spec"]["containers"][0]["livenessProbe"]["httpGet"]["port"] == "health"
    assert not by_kind(docs, "Secret")  # the chart never creates or inlines secrets
    (monitor,) = by_kind(docs, "ServiceMonitor")
    assert monitor["metadata"]["labels"]["release"] == "kube-prometheus-stack"
    assert {e["port"] for e in monitor["spec"]["endpoints"]} == {"metrics", "otlp-http"}
    (tb,) = [d for d in by_kind(docs, "Deployment") if d["metadata"]["name"].endswith("tensorboard")]
    assert tb["spec"]["template"]["spec"]["volumes"][0]["persistentVolumeClaim"]["readOnly"] is True
    configs = {d["metadata"]["name"]: d for d in by_kind(docs, "ConfigMap")}
    gateway = yaml.safe_load(configs["rl-otel-rl-otelcol-gateway"]["data"]["relay"])
    assert gateway["exporters"]["loadbalancing"]["resolver"]["dns"]["hostname"] == \
        "rl-otel-rl-headless.observability.svc.cluster.local"
    assert "rl-otel-rl-otelcol-agent" in configs


def test_statefulset_mode():
    docs = render(render_examples.value_sets()["statefulset"])
    (sts,) = by_kind(docs, "StatefulSet")
    assert sts["spec"]["replicas"] == 3 and sts["spec"]["serviceName"] == "rl-otel-rl-headless"
    assert sts["spec"]["volumeClaimTemplates"][0]["spec"]["storageClassName"] == "fast-ssd"
    assert not by_kind(docs, "PersistentVolumeClaim") and not by_kind(docs, "Deployment")


@pytest.mark.parametrize("values, message", [
    ({"replicas": 2, "gateway": {"enabled": True}},
     "[ERROR] replicas: more than one Deployment replica cannot share a ReadWriteOnce volume. Set mode=statefulset"),
    ({"mode": "statefulset", "replicas": 2},
     "[ERROR] replicas: several replicas need run-id routing"),
    ({"tensorboard": {"enabled": True}},
     "[ERROR] tensorboard.enabled: a second pod can mount the data volume only with ReadWriteMany."),
    ({"backends": {"wandb": {"enabled": True, "mode": "online"}}},
     "[ERROR] backends.wandb.existingSecret: online mode needs the API key."),
    ({"backends": {"mlflow": {"enabled": True}}},
     "[ERROR] backends.mlflow.trackingUri: must be an http(s) tracking server URI"),
    ({"metrics": {"serviceMonitor": {"enabled": True}}, "backends": {"prometheus": {"enabled": False}}},
     "[ERROR] metrics.serviceMonitor.enabled: there is no training-metrics endpoint to scrape."),
    ({"service": {"httpPort": 4317}}, "[ERROR] service.grpcPort: service.grpcPort, service.httpPort"),
])
def test_cross_field_checks_fail_with_a_clear_message(values, message):
    with pytest.raises(helm_python.HelmError) as err:
        render(values)
    assert message in str(err.value)


@pytest.mark.parametrize("values, fragment", [
    ({"replicaz": 2}, "replicaz"),
    ({"backends": {"neptune": {"enabled": True}}}, "neptune"),
    ({"mode": "daemonset"}, "mode"),
    ({"persistence": {"size": "lots"}}, "size"),
])
def test_schema_rejects_unknown_keys_and_bad_values(values, fragment):
    with pytest.raises(helm_python.HelmError) as err:
        render(values)
    assert fragment in str(err.value)


def test_grafana_dashboard_queries_series_the_sinks_produce():
    import json

    dash = json.loads((ROOT / "docs" / "grafana-dashboard.json").read_text())
    exprs = [t["expr"] for p in dash["panels"] for t in p["targets"]]
    assert all("step" not in e for e in exprs)
    for name in ("hw_gpu_utilization", "otel_rl_collector_received_points_total", "otel_rl_collector_sink_dropped_points_total",
                 "tokens_total", "timing_"):
        assert any(name in e for e in exprs), name
    assert {v["name"] for v in dash["templating"]["list"]} == {"datasource", "run"}


def test_spool_on_the_volume_by_default_and_extra_env_and_volumes():
    def collector_config(docs):
        (cm,) = [d for d in by_kind(docs, "ConfigMap") if "collector.yaml" in d["data"]]
        return yaml.safe_load(cm["data"]["collector.yaml"])

    docs = render()
    assert collector_config(docs)["spool"] == {"dir": "/data/spool", "max_bytes": 2147483648,
                                               "checkpoint_interval_s": 1}
    # an emptyDir would lose what was acknowledged at a restart: refused unless said explicitly
    with pytest.raises(Exception, match="spool.enabled: the spool lives on the data volume"):
        render({"persistence": {"enabled": False}})
    assert "spool" not in collector_config(render({"persistence": {"enabled": False}, "spool": {"enabled": False}}))
    docs = render({"extraEnv": [{"name": "WANDB_BASE_URL", "value": "https://wandb.corp"}],
                   "extraVolumes": [{"name": "ca", "configMap": {"name": "corp-ca"}}],
                   "extraVolumeMounts": [{"name": "ca", "mountPath": "/etc/ssl/corp", "readOnly": True}]})
    (deploy,) = by_kind(docs, "Deployment")
    pod = deploy["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    assert {"name": "WANDB_BASE_URL", "value": "https://wandb.corp"} in container["env"]
    assert {"name": "ca", "configMap": {"name": "corp-ca"}} in pod["volumes"]
    assert {"name": "ca", "mountPath": "/etc/ssl/corp", "readOnly": True} in container["volumeMounts"]
    for doc in docs:
        if doc["kind"] not in CRDS:
            kubernetes_validate.validate(doc, K8S_VERSION, strict=True)


def test_optional_tensorboard_ingress():
    assert not [d for d in render({"persistence": {"accessMode": "ReadWriteMany"}, "tensorboard": {"enabled": True}})
                if d["kind"] == "Ingress"]
    docs = render({"persistence": {"accessMode": "ReadWriteMany"},
                   "tensorboard": {"enabled": True, "ingress": {
                       "enabled": True, "className": "nginx", "host": "tb.example.com",
                       "annotations": {"nginx.ingress.kubernetes.io/auth-type": "basic"},
                       "tls": [{"hosts": ["tb.example.com"], "secretName": "tb-tls"}]}}})
    (ingress,) = by_kind(docs, "Ingress")
    kubernetes_validate.validate(ingress, K8S_VERSION, strict=True)
    (rule,) = ingress["spec"]["rules"]
    assert rule["host"] == "tb.example.com" and ingress["spec"]["ingressClassName"] == "nginx"
    backend = rule["http"]["paths"][0]["backend"]["service"]
    (service,) = [d for d in by_kind(docs, "Service") if d["metadata"]["name"].endswith("tensorboard")]
    assert backend == {"name": service["metadata"]["name"], "port": {"number": 6006}}


def test_probes_have_their_own_port_and_the_listener_is_configured():
    docs = render()
    (deploy,) = by_kind(docs, "Deployment")
    (container,) = deploy["spec"]["template"]["spec"]["containers"]
    assert {"name": "health", "containerPort": 13133, "protocol": "TCP"} in container["ports"]
    assert container["livenessProbe"]["httpGet"] == {"path": "/health", "port": "health"}
    assert container["readinessProbe"]["httpGet"] == {"path": "/ready", "port": "health"}
    (cm,) = [d for d in by_kind(docs, "ConfigMap") if "collector.yaml" in d["data"]]
    config = yaml.safe_load(cm["data"]["collector.yaml"])
    assert config["receivers"]["health"] == {"enabled": True, "host": "0.0.0.0", "port": 13133}
    assert config["limits"]["header_timeout_s"] == 5 and config["limits"]["max_table_columns"] == 64
    from otel_rl_collector.config import load_collector_config

    load_collector_config({k: v for k, v in config.items() if k not in ("mlflow", "mlflow_traces")})


def test_a_network_policy_by_default_and_a_loud_warning_without_auth():
    (policy,) = by_kind(render(), "NetworkPolicy")
    (otlp, probes) = policy["spec"]["ingress"]
    assert {p["port"] for p in otlp["ports"]} == {4317, 4318, 9464}
    assert {"namespaceSelector": {"matchLabels": {"otel-rl.io/access": "true"}}} in otlp["from"]
    assert probes == {"ports": [{"port": 13133, "protocol": "TCP"}]}
    assert not by_kind(render({"networkPolicy": {"enabled": False}}), "NetworkPolicy")
    assert "WARNING: auth.existingSecret is not set" in render_examples.notes({})
    assert "WARNING" not in render_examples.notes({"auth": {"existingSecret": "otel-rl-token"}})
