"""Config: errors name the field and what is allowed; env precedence; YAML."""

from __future__ import annotations

import pytest

import otel_rl
from otel_rl import ConfigError, load_config
from otel_rl.api.run import resolve_resource
from otel_rl.errors import MissingExtraError
from otel_rl.sinks.base import require


def test_defaults_enable_tensorboard_only(monkeypatch):
    for var in ("OTEL_EXPORTER_OTLP_ENDPOINT", "OTEL_EXPORTER_OTLP_METRICS_ENDPOINT"):
        monkeypatch.delenv(var, raising=False)
    cfg = load_config()
    assert list(cfg.enabled()) == ["tensorboard"]
    assert cfg.backends["tensorboard"].log_dir == "runs"
    assert cfg.pipeline.export_interval_s == 1.0


@pytest.mark.parametrize("source, message", [
    ({"tensorbord": {}}, r"config.tensorbord: unknown key; backends: mlflow, mlflow_traces, otlp, prometheus, swanlab, tensorboard, wandb; sources: gpu"),
    ({"tensorboard": {"log_dirr": "x"}}, r"tensorboard.log_dirr: unknown field; allowed: enabled, log_dir"),
    ({"tensorboard": {"enabled": "yes"}}, r"tensorboard.enabled: expected true or false, got 'yes'"),
    ({"otlp": {"protocol": "udp"}}, r"otlp.protocol: 'udp' is not allowed; allowed: 'grpc', 'http/protobuf'"),
    ({"export_interval_s": 0}, r"config.export_interval_s: must be > 0, got 0"),
    ({"export_interval_s": "fast"}, r"config.export_interval_s: expected a number, got 'fast'"),
    ({"tensorboard": []}, r"tensorboard: expected a mapping of fields"),
    ([1, 2], r"config: expected a mapping, a YAML path or a Config"),
])
def test_errors_name_the_field_and_the_allowed_values(source, message):
    with pytest.raises(ConfigError, match=message):
        load_config(source)


def test_yaml_file(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("run_name: exp1\ntensorboard:\n  log_dir: /tmp/tb\nexport_interval_s: 2\n")
    cfg = load_config(path)
    assert cfg.pipeline.run_name == "exp1" and cfg.pipeline.export_interval_s == 2.0
    assert cfg.backends["tensorboard"].log_dir == "/tmp/tb"
    bad = tmp_path / "bad.yaml"
    bad.write_text("tensorboard: [\n")
    with pytest.raises(ConfigError, match="invalid YAML"):
        load_config(bad)
    with pytest.raises(ConfigError, match="No such file"):
        load_config(tmp_path / "missing.yaml")


def test_env_precedence_explicit_then_env_then_default(monkeypatch):
    monkeypatch.setenv("OTEL_METRIC_EXPORT_INTERVAL", "250")  # standard var, milliseconds
    monkeypatch.setenv("OTEL_RL_RUN_NAME", "from-env")
    cfg = load_config()
    assert cfg.pipeline.export_interval_s == 0.25 and cfg.pipeline.run_name == "from-env"
    cfg = load_config({"export_interval_s": 3, "run_name": "explicit"})
    assert cfg.pipeline.export_interval_s == 3.0 and cfg.pipeline.run_name == "explicit"
    monkeypatch.setenv("OTEL_METRIC_EXPORT_INTERVAL", "soon")
    with pytest.raises(ConfigError, match="OTEL_METRIC_EXPORT_INTERVAL='soon'"):
        load_config()


def test_standard_otel_env_for_service_name_resource_and_otlp(monkeypatch):
    monkeypatch.setenv("OTEL_SERVICE_NAME", "trainer")
    monkeypatch.setenv("OTEL_RESOURCE_ATTRIBUTES", "otel_rl.run.id=job-17,k8s.pod.name=p0")
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", "http://127.0.0.1:4318")
    monkeypatch.delenv("OTEL_RL_RUN_NAME", raising=False)
    cfg = load_config()
    assert sorted(cfg.enabled()) == ["otlp"]  # a rank exporting to a collector writes no local TensorBoard
    assert sorted(load_config({"tensorboard": {}}).enabled()) == ["otlp", "tensorboard"]  # unless asked to
    resource = resolve_resource(cfg)
    assert resource.attributes["service.name"] == "trainer"
    assert resource.attributes["otel_rl.run.id"] == "job-17"
    assert resource.attributes["k8s.pod.name"] == "p0"
    assert not load_config({"otlp": {"enabled": False}}).backends["otlp"].enabled


def test_missing_optional_package_names_the_extra():
    with pytest.raises(MissingExtraError, match=r"pip install 'otel-rl\[wandb\]'"):
        require("otel_rl_no_such_module", "wandb")


def test_import_otel_rl_loads_no_backend_sdk(python):
    import subprocess

    code = ("import sys, otel_rl; bad = [m for m in sys.modules if m.split('.')[0] in "
            "('tensorboard', 'wandb', 'swanlab', 'mlflow', 'pynvml')]; print(bad); assert not bad")
    assert subprocess.run([python, "-c", code], capture_output=True).returncode == 0


def test_public_api_is_the_contract():
    assert {"init", "shutdown", "set_step", "get_step", "Logger", "load_config"} <= set(otel_rl.__all__)
    assert all(hasattr(otel_rl, name) for name in otel_rl.__all__)


def test_cli_check_config(tmp_path, capsys):
    from otel_rl.cli import main

    good = tmp_path / "good.yaml"
    good.write_text("tensorboard:\n  log_dir: out\n")
    assert main(["check-config", str(good)]) == 0
    assert "'log_dir': 'out'" in capsys.readouterr().out
    bad = tmp_path / "bad.yaml"
    bad.write_text("wandbb: {}\n")
    assert main(["check-config", str(bad)]) == 2
    assert "config.wandbb: unknown key" in capsys.readouterr().err


def test_the_documented_configuration_blocks_are_valid_configs():
    """The annotated config in docs/configuration.md (every setting) and README's short one load
    as they are (no field the code does not know)."""
    import re

    import yaml
    from conftest import ROOT

    full = (ROOT / "docs" / "configuration.md").read_text()
    block = re.search(r"```yaml\n(.*?)```", full, re.S).group(1)
    config = load_config(yaml.safe_load(block))
    assert config.sources["retry"].unknown_attempts == 5 and config.pipeline.shutdown_timeout_s == 30
    readme = (ROOT / "README.md").read_text()
    section = readme[readme.index("## Configuration"):]
    block = re.search(r"```yaml\n(.*?)```", section, re.S).group(1)
    config = load_config(yaml.safe_load(block))
    assert set(config.enabled()) == {"tensorboard", "wandb", "mlflow", "prometheus"}
    assert config.sources["gpu"].enabled and config.sources["samples"].print_rows == 2


def test_the_default_backend_comes_with_the_base_install():
    """`pip install otel-rl` then `otel_rl.init()` must work: TensorBoard (on by default) is a
    base dependency, not an extra."""
    import tomllib
    from conftest import ROOT

    from otel_rl.config import load_config

    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    base = {dep.split(">")[0].split("=")[0].split("[")[0].strip() for dep in project["dependencies"]}
    assert list(load_config({}).enabled()) == ["tensorboard"]
    assert "tensorboard" in base
