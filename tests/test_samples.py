"""Samples and tables (``otel_rl.log_samples``, the OTel Logs API) and system metrics, read back
from each backend's own storage: TensorBoard's text plugin (its reader and a real `tensorboard`
server), a W&B Table in the offline run, a real MLflow server's table (`mlflow.load_table`),
SwanLab Text via its reader; embedded and through the collector (OTLP logs, protobuf and JSON)."""

from __future__ import annotations

import json
import sys
import urllib.request
from pathlib import Path

import pytest
from backends import (
    PrometheusServer,
    TensorBoardServer,
    backend_config,
    read_scalars,
)
from backends import read_mlflow_table as _read_mlflow_table
from backends import read_swanlab_texts as _read_swanlab_texts
from backends import read_tb_tables as _read_tb_tables
from backends import read_wandb_tables as _read_wandb_tables

ROWS = [{"prompt": "2+2=?", "response": "4", "reward": 1.0},
        {"prompt": "a|b", "response": "line 1\nline 2", "reward": -0.5}]


def _expect_rows(rows: list[dict]) -> list[tuple]:
    return [(r["prompt"], r["response"], float(r["reward"])) for r in rows]


def test_samples_and_system_metrics_reach_every_backend(tmp_path, mlflow_server, capfd):
    from opentelemetry import _logs

    import otel_rl

    config = {"run_name": "grpo", "export_interval_s": 0.2,
              "samples": {"print_rows": 1}, "system_metrics": {"enabled": True, "interval_s": 0.1},
              "prometheus": {"enabled": True, "port": 0},
              **{name: backend_config(name, tmp_path, mlflow_server.url)
                 for name in ("tensorboard", "wandb", "swanlab", "mlflow")}}
    pipeline = otel_rl.init(config)
    try:
        assert pipeline.system is not None, "system metrics are on by default"
        loss = __import__("opentelemetry.metrics", fromlist=["x"]).get_meter("t").create_gauge("loss")
        for step in range(3):
            otel_rl.set_step(step)
            loss.set(0.1 * step)
            if step < 2:
                otel_rl.log_samples([{**r, "reward": r["reward"] + step} for r in ROWS], name="val/samples")
            else:  # the OTel Logs API: one record per row, the event name is the table
                logger = _logs.get_logger("grpo")
                for r in ROWS:
                    logger.emit(event_name="val/samples", body={**r, "reward": r["reward"] + step})
            __import__("time").sleep(0.3)
        # Prometheus (a real server scraping the run's endpoint): system metrics, no samples
        (prom_sink,) = [sink for sink in pipeline.sinks if sink.name == "prometheus"]
        prometheus = PrometheusServer(tmp_path, [f"127.0.0.1:{prom_sink.port}"]).start()
        try:
            memory = prometheus.wait_for('system_process_memory_usage{run="grpo"}', lambda r: len(r) == 1)
            assert float(memory[0]["value"][1]) > 10e6 and "step" not in memory[0]["metric"]
            assert not prometheus.query('{__name__=~"val.*"}')
        finally:
            prometheus.stop()
    finally:
        assert otel_rl.shutdown()
    expected = {s: [(r["prompt"], r["response"], r["reward"] + s) for r in ROWS] for s in range(3)}

    # console: the first sample of every table (NeMo-RL's num_val_samples_to_print)
    printed = capfd.readouterr().out
    assert printed.count("===== val/samples · run grpo") == 3 and "... 1 more" in printed

    # TensorBoard: a markdown table per step (reader), rendered as an HTML table by a real server
    tables = _read_tb_tables(tmp_path / "tb" / "grpo", "val/samples")
    assert sorted(tables) == [0, 1, 2]
    assert tables[0].splitlines()[:2] == ["| prompt | response | reward |", "|---|---|---|"]
    assert "| a\\|b | line 1<br>line 2 | -0.5 |" in tables[0]
    server = TensorBoardServer(tmp_path / "tb").start()
    try:
        import time

        deadline = time.monotonic() + 60
        while True:
            tags = server.get("/data/plugin/text/tags")
            if "val/samples/text_summary" in tags.get("grpo", []):
                break
            assert time.monotonic() < deadline, tags
            time.sleep(1)
        shown = server.get("/data/plugin/text/text", run="grpo", tag="val/samples/text_summary")
        assert sorted(e["step"] for e in shown) == [0, 1, 2]
        assert all("<table>" in e["text"] and "line 1<br>line 2" in e["text"] for e in shown)
    finally:
        server.stop()

    # W&B: a Table per step in the offline run
    wb = _read_wandb_tables(tmp_path / "wb", "grpo", "val/samples")
    assert {s: _expect_rows(rows) for s, rows in wb.items()} == expected

    # MLflow: one growing table, a step column, readable with mlflow.load_table
    rows = _read_mlflow_table(mlflow_server.url, f"exp-{tmp_path.name}", "grpo", "tables/val/samples.json")
    got: dict[int, list] = {}
    for r in rows:
        got.setdefault(int(r["step"]), []).append((r["prompt"], r["response"], float(r["reward"])))
    assert got == expected

    # SwanLab: one Text per row
    texts = _read_swanlab_texts(tmp_path / "sl", "grpo", "val/samples")
    assert sorted(texts) == [0, 1, 2]
    assert texts[1] == ["prompt: 2+2=?\nresponse: 4\nreward: 2.0", "prompt: a|b\nresponse: line 1\nline 2\nreward: 0.5"]

    # system metrics at the training steps, in every backend
    for name in ("tensorboard", "wandb", "swanlab", "mlflow"):
        scalars = read_scalars(name, tmp_path, "grpo", mlflow_server.url)
        assert [k for k in scalars if not k.startswith(("system/", "val/samples"))] == ["loss"], (name, sorted(scalars))
        assert not [k for k in scalars if "device:lo/" in k], (name, sorted(scalars))  # no loopback
        for key in ("system/process.memory.usage", "system/memory.usage/state:used"):
            assert key in scalars, (name, key, sorted(scalars))
            # several reads at one step are all kept where the backend can (MLflow: "duplicates")
            steps = {s for s in scalars[key] if s != "duplicates"}
            assert steps and steps <= {0, 1, 2}, (name, key, scalars[key])
        assert scalars["system/process.memory.usage"][max(steps)] > 10e6, name


def test_samples_through_the_collector_protobuf_and_json(tmp_path, mlflow_server):
    sys.path.insert(0, str(Path(__file__).with_name("collector")))
    import otel_rl
    from otel_rl_collector import create

    collector = create({
        "receivers": {"http": {"port": 0}, "grpc": {"port": 0}},
        "spool": {"dir": str(tmp_path / "spool")},
        **{name: backend_config(name, tmp_path, mlflow_server.url)
           for name in ("tensorboard", "wandb", "swanlab", "mlflow")},
    }).start()
    try:
        for protocol, port in (("http/protobuf", collector.http_port), ("grpc", collector.grpc_port)):
            run = f"remote-{protocol[:4]}"
            pipeline = otel_rl.Pipeline({"run_name": run, "tensorboard": {"enabled": False},
                                         "system_metrics": {"enabled": False},
                                         "otlp": {"enabled": True, "protocol": protocol,
                                                  "endpoint": f"http://127.0.0.1:{port}"}})
            for step in range(2):
                pipeline.set_step(step)
                pipeline.log_samples({"prompt": [r["prompt"] for r in ROWS],
                                      "response": [r["response"] for r in ROWS],
                                      "reward": [r["reward"] + step for r in ROWS]}, name="val/samples")
            assert pipeline.shutdown()
        # a client that is not otel-rl: OTLP/JSON, two rows and a record without an event name
        row = lambda p, r: {"eventName": "gen", "timeUnixNano": "1700000000000000000",  # noqa: E731
                            "attributes": [{"key": "step", "value": {"intValue": "7"}}],
                            "body": {"kvlistValue": {"values": [
                                {"key": "prompt", "value": {"stringValue": p}},
                                {"key": "reward", "value": {"doubleValue": r}}]}}}
        body = {"resourceLogs": [{"resource": {"attributes": [
            {"key": "service.name", "value": {"stringValue": "js-client"}}]},
            "scopeLogs": [{"logRecords": [row("q1", 1.0), row("q2", 0.0), {"body": {"stringValue": "plain log"}}]}]}]}
        request = urllib.request.Request(f"http://127.0.0.1:{collector.http_port}/v1/logs",
                                         data=json.dumps(body).encode(), method="POST",
                                         headers={"Content-Type": "application/json"})
        with urllib.request.urlopen(request, timeout=10) as response:
            answer = json.loads(response.read())
        assert answer["partialSuccess"]["rejectedLogRecords"] == "1"
        assert "event_name" in answer["partialSuccess"]["errorMessage"]
    finally:
        assert collector.shutdown()
    metrics = collector.self_metrics()
    assert metrics["received_log_records"] == 2 * 2 * 2 + 2 and metrics["rejected_log_records"] == 1

    expected = {s: [(r["prompt"], r["response"], r["reward"] + s) for r in ROWS] for s in range(2)}
    for run in ("remote-http", "remote-grpc"):
        tables = _read_tb_tables(tmp_path / "tb" / run, "val/samples")
        assert sorted(tables) == [0, 1] and "| a\\|b | line 1<br>line 2 | 0.5 |" in tables[1]
        assert {s: _expect_rows(rows) for s, rows in _read_wandb_tables(tmp_path / "wb", run, "val/samples").items()} \
            == expected
        got: dict[int, list] = {}
        for r in _read_mlflow_table(mlflow_server.url, f"exp-{tmp_path.name}", run, "tables/val/samples.json"):
            got.setdefault(int(r["step"]), []).append((r["prompt"], r["response"], float(r["reward"])))
        assert got == expected
        assert sorted(_read_swanlab_texts(tmp_path / "sl", run, "val/samples")) == [0, 1]
    assert _read_tb_tables(tmp_path / "tb" / "js-client", "gen") == {
        7: "| prompt | reward |\n|---|---|\n| q1 | 1.0 |\n| q2 | 0.0 |"}


def test_limits_and_input_shapes(tmp_path, caplog):
    import numpy as np

    import otel_rl

    pipeline = otel_rl.Pipeline({"run_name": "lim", "tensorboard": {"log_dir": str(tmp_path / "tb")},
                                 "system_metrics": {"enabled": False},
                                 "samples": {"max_rows": 2, "max_chars": 5}})
    try:
        pipeline.set_step(1)
        pipeline.log_samples([{"text": "abcdefgh", "score": np.float32(0.5)}, {"text": "ok", "extra": [1, 2]},
                              {"text": "dropped"}], name="s")
        with pytest.raises(ValueError, match="different lengths"):
            pipeline.log_samples({"a": [1, 2], "b": [1]})
        with pytest.raises(TypeError, match="each row must be a dict"):
            pipeline.log_samples(["not a dict"])
        with pytest.raises(TypeError, match="list of dicts or a dict of columns"):
            pipeline.log_samples("text")
        with pytest.raises(ValueError):
            pipeline.log_samples([{"a": 1}], step=-1)
    finally:
        assert pipeline.shutdown()
    assert pipeline.stats()["dropped_sample_rows"] == 1
    assert "samples.max_rows=2" in caplog.text
    assert _read_tb_tables(tmp_path / "tb" / "lim", "s") == {
        # brackets escaped in the markdown source (no link can form); rendered as written
        1: "| text | score | extra |\n|---|---|---|\n| abcde… \\[3 more characters\\] | 0.5 |  |\n"
           "| ok |  | \\[1, 2… \\[1 more characters\\] |"}


def test_mlflow_table_is_not_duplicated_when_a_batch_is_replayed(tmp_path, mlflow_server):
    """A batch replayed from a spool after a crash (the MLflow write done, its acknowledgement
    lost) leaves the table as it was: each call's rows once."""
    from otel_rl.model.records import Batch, Point, Table
    from otel_rl.sinks.mlflow import MlflowConfig, MlflowExporter

    table = Table(("prompt", "reward"), (("p", 1.0), ("q", 2.0)))
    batch = Batch([Point("replay", "val/samples", 3, table, 1_700_000_000.25, "table")])
    config = MlflowConfig(enabled=True, tracking_uri=mlflow_server.url, experiment="replay")
    first = MlflowExporter(config)
    first.instance = "spool-1"
    first.write(batch)
    restarted = MlflowExporter(config)  # the same spool: the same instance, so the same MLflow run
    restarted.instance = "spool-1"
    restarted.write(batch)  # the replay
    restarted.write(Batch([Point("replay", "val/samples", 3, table, 1_700_000_000.5, "table")]))  # a new call
    rows = _read_mlflow_table(mlflow_server.url, "replay", "replay", "tables/val/samples.json")
    assert [(r["step"], r["prompt"], r["reward"]) for r in rows] == [(3, "p", 1.0), (3, "q", 2.0)] * 2


def test_nemo_rl_num_val_samples_to_print(tmp_path, capfd, monkeypatch):
    """NeMo-RL's config as it is: ``num_val_samples_to_print`` rows of each table are printed."""
    import yaml
    from conftest import ROOT

    import otel_rl

    cfg = yaml.safe_load((ROOT / "tests" / "configs" / "nemo_rl_grpo_math_1B.yaml").read_text())
    cfg["logger"].update(num_val_samples_to_print=2, tensorboard_enabled=True, monitor_gpus=False,
                         log_dir=str(tmp_path / "logs"))
    logger = otel_rl.Logger(cfg)
    rows = {"prompt": [f"p{i}" for i in range(5)], "response": [f"r{i}" for i in range(5)],
            "reward": [float(i) for i in range(5)]}
    logger.log_samples(rows, step=10, name="validation/samples")
    logger.finish()
    out = capfd.readouterr().out
    assert "===== validation/samples · run grpo-dev-logger · step 10 · 5 rows =====" in out
    assert "prompt: p1" in out and "prompt: p2" not in out and "... 3 more" in out
    tables = _read_tb_tables(tmp_path / "logs" / "tensorboard" / "grpo-dev-logger", "validation/samples")
    assert tables[10].count("\n") == 1 + 5


def test_mlflow_table_costs_what_it_adds_and_two_calls_at_one_time_are_both_kept(tmp_path, mlflow_server):
    """Found by a probe: the table was downloaded and uploaded whole on every call (bytes grew
    with the square of the rows), and two calls at the same step and time kept only one. Now
    a call uploads at most one part; every row is read back once, across the parts."""
    from mlflow.tracking import MlflowClient

    from otel_rl.model.records import Batch, Point, Table
    from otel_rl.sinks.mlflow import MlflowConfig, MlflowExporter
    from otel_rl.sinks.mlflow_tables import part_path

    config = MlflowConfig(enabled=True, tracking_uri=mlflow_server.url, experiment="parts")
    sink = MlflowExporter(config)
    sink._tables.part_bytes = 8_000
    calls = 120
    for i in range(calls):
        rows = tuple((f"prompt {i}.{j}", "x" * 40, float(j)) for j in range(4))
        sink.write(Batch([Point("parts", "val/samples", i // 2, Table(("prompt", "response", "reward"), rows),
                                1_700_000_000.0 + i // 2, "table")]))  # two calls per step, at one time
    one_call = 4 * 80
    assert sink._tables.uploaded_bytes < calls * (8_000 + 2 * one_call)  # linear: whole, it was ~50x this

    client = MlflowClient(tracking_uri=mlflow_server.url)
    exp = client.get_experiment_by_name("parts")
    (run,) = client.search_runs([exp.experiment_id], filter_string="tags.`otel_rl.run_id` = 'parts'")
    parts = sorted(f.path for f in client.list_artifacts(run.info.run_id, "tables/val"))
    assert len(parts) >= 5 and "tables/val/samples.json" in parts
    rows = []
    for n in range(1, len(parts) + 1):
        rows += _read_mlflow_table(mlflow_server.url, "parts", "parts", part_path("tables/val/samples.json", n))
    assert sorted(r["prompt"] for r in rows) == sorted(f"prompt {i}.{j}" for i in range(calls) for j in range(4))
    restarted = MlflowExporter(config)  # a replay of the last call after a restart adds nothing
    restarted.instance = sink.instance
    i = calls - 1
    restarted.write(Batch([Point("parts", "val/samples", i // 2, Table(("prompt", "response", "reward"), tuple(
        (f"prompt {i}.{j}", "x" * 40, float(j)) for j in range(4))), 1_700_000_000.0 + i // 2, "table")]))
    assert restarted._tables.uploaded_bytes == 0
