"""The frameworks users train with, for real on the CPU: verl's own ``Tracking``, a Lightning
``Trainer`` (2 processes, DDP on gloo) through the collector, an Accelerate ``Accelerator``, a
``transformers.Trainer`` and TRL's ``GRPOTrainer`` on tiny models made in the test. Each runs the
copy-paste example of docs/integrations.md where there is one, and every value is read back from
the backends' own storage."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml
from backends import (
    backend_config,
    read_mlflow_table,
    read_params,
    read_scalars,
    read_swanlab_texts,
    read_tb_tables,
    read_wandb_tables,
)
from conftest import ROOT, doc_blocks, wait_for_late_helper

DOC = ROOT / "docs" / "integrations.md"
BACKENDS = ("tensorboard", "wandb", "swanlab", "mlflow")


def _config(tmp: Path, mlflow_url: str) -> Path:
    path = tmp / "otel-rl.yaml"
    path.write_text(yaml.safe_dump({name: backend_config(name, tmp, mlflow_url) for name in BACKENDS}))
    return path


#: Set by launchers (torchrun, Lightning): inherited, they would make a script a worker of a
#: launch that does not exist.
LAUNCHER_ENV = ("RANK", "LOCAL_RANK", "WORLD_SIZE", "LOCAL_WORLD_SIZE", "GROUP_RANK", "NODE_RANK", "MASTER_ADDR",
                "MASTER_PORT")


def _run(code: str, tmp: Path, config: Path, timeout: float = 240, **env: str) -> str:
    """Run ``code`` as a script in ``tmp`` with ``OTEL_RL_CONFIG=config``; its stdout. The script
    runs in a session of its own, killed whole on a timeout (a DDP launch's other ranks too)."""
    script = tmp / "example.py"
    script.write_text(code)
    base = {k: v for k, v in os.environ.items() if k not in LAUNCHER_ENV}
    proc = subprocess.Popen([sys.executable, str(script)], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            stdin=subprocess.DEVNULL, text=True, cwd=tmp, start_new_session=True,
                            env={**base, "OTEL_RL_CONFIG": str(config), "OTEL_RL_SYSTEM_METRICS": "false", **env})
    try:
        out, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        out, err = proc.communicate()
        raise AssertionError(f"timed out after {timeout} s: {err[-4000:]}") from None
    assert proc.returncode == 0, err[-4000:]
    wait_for_late_helper(err)
    return out


def _samples(tmp: Path, run: str, table: str, mlflow_url: str) -> dict[str, dict[int, int]]:
    """{backend: {step: rows}} of one samples table in each backend."""
    mlflow: dict[int, int] = {}
    for row in read_mlflow_table(mlflow_url, f"exp-{tmp.name}", run, f"tables/{table}.json"):
        mlflow[int(row["step"])] = mlflow.get(int(row["step"]), 0) + 1
    return {"tensorboard": {s: text.count("\n") - 1 for s, text in read_tb_tables(tmp / "tb" / run, table).items()},
            "wandb": {s: len(rows) for s, rows in read_wandb_tables(tmp / "wb", run, table).items()},
            "swanlab": {s: len(texts) for s, texts in read_swanlab_texts(tmp / "sl", run, table).items()},
            "mlflow": mlflow}


# -- verl -------------------------------------------------------------------------------------

def test_verl_tracking_with_the_otel_rl_backend_reaches_every_backend(tmp_path, mlflow_server):
    pytest.importorskip("verl.utils.tracking")
    (example,) = doc_blocks(DOC, "verl", "python")
    _run(example, tmp_path, _config(tmp_path, mlflow_server.url))
    for name in BACKENDS:
        scalars = read_scalars(name, tmp_path, "ppo-tiny", mlflow_server.url)
        assert scalars["actor/pg_loss"] == pytest.approx({1: 0.5, 2: 0.25, 3: 0.5 / 3}), name
        assert scalars["critic/score/mean"] == pytest.approx({1: 0.2, 2: 0.4, 3: 0.6}), name
        params = read_params(name, tmp_path, "ppo-tiny", mlflow_server.url)
        assert float(params["actor/lr"]) == pytest.approx(1e-6) and int(params["seed"]) == 1, (name, params)
    assert _samples(tmp_path, "ppo-tiny", "val/generations", mlflow_server.url) == {b: {3: 2} for b in BACKENDS}
    rows = read_wandb_tables(tmp_path / "wb", "ppo-tiny", "val/generations")[3]
    assert [(r["input"], r["output"], r["score"]) for r in rows] == [("1+1=?", "2", 1.0), ("2+3=?", "6", 0.0)]


def test_verl_without_the_otel_rl_backend_is_untouched_and_a_failed_run_is_marked(tmp_path, mlflow_server):
    pytest.importorskip("verl.utils.tracking")
    code = """
from verl.utils.tracking import Tracking
assert "otel_rl" in Tracking.supported_backend       # the plugin, loaded by `import verl`
plain = Tracking(project_name="p", experiment_name="console-only", default_backend="console")
assert "otel_rl" not in plain.logger
plain.finish()
t = Tracking(project_name="p", experiment_name="crashed", default_backend=["otel_rl"])
t.log({"loss": 1.0}, step=1)
t.finish(exit_code=1)
t.finish(exit_code=1)                                  # verl calls it again from __del__: once only
"""
    _run(code, tmp_path, _config(tmp_path, mlflow_server.url))
    from backends import read_mlflow

    found = read_mlflow(mlflow_server.url, f"exp-{tmp_path.name}", "crashed")
    assert found["scalars"]["loss"] == {1: 1.0}
    assert found["status"] == "FAILED"
    assert not (tmp_path / "tb" / "console-only").exists()


VERL_OUTAGE = """
import time
from verl.utils.tracking import Tracking

t = Tracking(project_name="p", experiment_name="outage", default_backend=["console", "otel_rl"])
for step in range(60):
    t.log({"actor/pg_loss": step * 0.5}, step=step)
    time.sleep(0.1)
t.finish()
"""


def test_verl_training_while_mlflow_is_down_loses_nothing(tmp_path):
    """MLflow's server is down when verl's trainer starts logging and comes back mid-run: every
    step reaches MLflow once, and TensorBoard meanwhile; the script never waits on MLflow."""
    pytest.importorskip("verl.utils.tracking")
    from backends import MlflowServer, read_mlflow

    server = MlflowServer(tmp_path)  # its port is chosen, nothing listens there yet
    config = tmp_path / "otel-rl.yaml"
    config.write_text(yaml.safe_dump({"tensorboard": backend_config("tensorboard", tmp_path),
                                      "mlflow": backend_config("mlflow", tmp_path, server.url)}))
    script = tmp_path / "outage.py"
    script.write_text(VERL_OUTAGE)
    base = {k: v for k, v in os.environ.items() if k not in LAUNCHER_ENV}
    proc = subprocess.Popen([sys.executable, str(script)], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            stdin=subprocess.DEVNULL, text=True, cwd=tmp_path, start_new_session=True,
                            env={**base, "OTEL_RL_CONFIG": str(config), "OTEL_RL_SYSTEM_METRICS": "false"})
    try:
        time.sleep(3.0)  # about half the steps are logged while MLflow is down
        assert proc.poll() is None, proc.stderr.read()[-3000:]
        server.start()
        out, err = proc.communicate(timeout=180)
        assert proc.returncode == 0, err[-3000:]
        wait_for_late_helper(err)
        found = read_mlflow(server.url, f"exp-{tmp_path.name}", "outage")
        assert found["scalars"]["actor/pg_loss"] == {s: s * 0.5 for s in range(60)}
        from mlflow.tracking import MlflowClient

        history = MlflowClient(tracking_uri=server.url).get_metric_history(found["run_id"], "actor/pg_loss")
        assert sorted(m.step for m in history) == list(range(60))  # each step once
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.communicate()
        server.stop()
    from conftest import read_tensorboard

    assert read_tensorboard(tmp_path / "tb" / "outage")["scalars"]["actor/pg_loss"] == {s: s * 0.5 for s in range(60)}


# -- Accelerate -------------------------------------------------------------------------------

def test_accelerate_tracker_example_reaches_every_backend(tmp_path, mlflow_server):
    pytest.importorskip("accelerate")
    pytest.importorskip("torch")
    (example,) = doc_blocks(DOC, "Accelerate", "python")
    _run(example, tmp_path, _config(tmp_path, mlflow_server.url))
    seen = {name: read_scalars(name, tmp_path, "accelerate-tiny", mlflow_server.url) for name in BACKENDS}
    losses = seen["mlflow"]["train/loss"]
    assert sorted(losses) == [0, 1, 2, 3, 4] and losses[4] < losses[0]  # it trained
    for name, scalars in seen.items():
        assert scalars["train/loss"] == pytest.approx(losses, rel=1e-6), name
        assert scalars["train/lr"] == pytest.approx(dict.fromkeys(range(5), 0.1)), name
        params = read_params(name, tmp_path, "accelerate-tiny", mlflow_server.url)
        assert float(params["lr"]) == pytest.approx(0.1) and int(params["model/layers"]) == 1, (name, params)
    from conftest import read_tensorboard

    assert "notes/text_summary" in read_tensorboard(tmp_path / "tb" / "accelerate-tiny")["tensors"]


ACCELERATE_NESTED = """
import torch
from accelerate import Accelerator
from otel_rl.accelerate import OtelRLTracker

accelerator = Accelerator(log_with=OtelRLTracker(run_name="nested"))
accelerator.init_trackers("proj", config={"opt": {"lr": 0.5, "betas": [0.9, 0.99]}})
accelerator.log({"eval": {"acc": {"top1": 0.25, "top5": torch.tensor(0.75)}, "note": "first"}}, step=3)
accelerator.log({"eval": {"acc": {"top1": 0.5}}})  # no step: the one after the last
accelerator.end_training()
"""


def test_accelerate_nested_values_without_a_step(tmp_path):
    """Nested dicts flattened with "/", a 0-d tensor as a number, a string as a text, and a log
    without ``step`` at the next step; nested hyperparameters flattened too (TensorBoard)."""
    pytest.importorskip("accelerate")
    pytest.importorskip("torch")
    config = tmp_path / "otel-rl.yaml"
    config.write_text(yaml.safe_dump({"tensorboard": backend_config("tensorboard", tmp_path)}))
    _run(ACCELERATE_NESTED, tmp_path, config)
    from conftest import read_tensorboard

    run = read_tensorboard(tmp_path / "tb" / "nested")
    assert run["scalars"]["eval/acc/top1"] == {3: 0.25, 4: 0.5}
    assert run["scalars"]["eval/acc/top5"] == {3: 0.75}
    assert "eval/note/text_summary" in run["tensors"]
    params = read_params("tensorboard", tmp_path, "nested")
    assert float(params["opt/lr"]) == 0.5, params


# -- PyTorch Lightning ------------------------------------------------------------------------

@pytest.mark.timeout(400)
def test_lightning_ddp_two_ranks_through_the_collector_reduced_in_tensorboard(tmp_path):
    pytest.importorskip("lightning")
    sys.path.insert(0, str(ROOT / "tests" / "collector"))
    from backends import free_port
    from conftest import read_hparams, read_tensorboard
    from trainers import start_collector

    example, collector_yaml = doc_blocks(DOC, "PyTorch Lightning", "python")[0], tmp_path / "collector.yaml"
    http = free_port()
    collector_yaml.write_text(yaml.safe_dump({"receivers": {"http": {"port": http}, "grpc": {"enabled": False}},
                                              "reduce": {"timeout_s": 30},
                                              "tensorboard": {"log_dir": str(tmp_path / "tb")}}))
    config = tmp_path / "otel-rl.yaml"
    config.write_text(yaml.safe_dump({"otlp": {"enabled": True, "endpoint": f"http://127.0.0.1:{http}"},
                                      "export_interval_s": 0.3}))
    collector = start_collector(collector_yaml)
    try:
        _run(example, tmp_path, config, timeout=300, MASTER_PORT=str(free_port()), PL_DISABLE_FORK="1")
    finally:
        collector.terminate()
        collector.wait(120)
    seen = read_tensorboard(tmp_path / "tb" / "lightning-tiny")["scalars"]
    assert seen["train/rank"] == dict.fromkeys(range(6), 0.5)  # (0 + 1) / 2 at every step: both ranks, reduced
    assert sorted(seen["train/loss"]) == list(range(6))
    assert float(read_hparams(tmp_path / "tb" / "lightning-tiny")["lr"]) == pytest.approx(0.1)


# -- Hugging Face Trainer and TRL -------------------------------------------------------------

HF_ENV = {"HF_HUB_OFFLINE": "1", "HF_HUB_DISABLE_TELEMETRY": "1", "TOKENIZERS_PARALLELISM": "false",
          "CUDA_VISIBLE_DEVICES": ""}


def _grpo_example() -> str:
    (example,) = doc_blocks(DOC, "TRL's completions (GRPO, RLOO)", "python")
    return example


@pytest.mark.timeout(400)
def test_trl_grpo_scalars_and_completions_reach_every_backend(tmp_path, mlflow_server):
    pytest.importorskip("trl")
    _run(_grpo_example(), tmp_path, _config(tmp_path, mlflow_server.url), timeout=300, **HF_ENV)
    for name in BACKENDS:
        scalars = read_scalars(name, tmp_path, "grpo-tiny", mlflow_server.url)
        for key in ("train/loss", "train/reward", "train/rewards/short/mean", "train/rewards/has_a/mean"):
            assert {1, 2, 3} <= set(scalars[key]), (name, key, scalars.get(key))
        assert scalars["train/rewards/has_a/mean"][1] in (0.0, 0.5, 1.0), name
    assert _samples(tmp_path, "grpo-tiny", "completions", mlflow_server.url) == {b: {1: 2, 2: 2, 3: 2}
                                                                                 for b in BACKENDS}
    tables = read_wandb_tables(tmp_path / "wb", "grpo-tiny", "completions")
    prompts = {"what is 1+1?", "say hi:", "count to 3:", "abc"}
    for step, rows in tables.items():
        assert [sorted(r) for r in rows] == [["advantage", "completion", "has_a", "prompt", "short"]] * 2, rows
        for r in rows:  # each row's rewards are the reward functions' own values for its completion
            assert r["prompt"] in prompts and r["has_a"] == float("a" in r["completion"]), (step, r)
            assert r["short"] == pytest.approx(1.0 / (1 + len(r["completion"]))), (step, r)
        assert sum(r["advantage"] for r in rows) == pytest.approx(0.0, abs=1e-5)  # GRPO: centred per prompt


@pytest.mark.timeout(400)
def test_a_real_transformers_trainer_reports_to_otel_rl_in_every_backend(tmp_path, mlflow_server):
    pytest.importorskip("torch")
    tokenizer_part = _grpo_example().split("model = LlamaForCausalLM")[0]
    code = tokenizer_part + """
from transformers import DataCollatorForLanguageModeling, GPT2Config, GPT2LMHeadModel, Trainer, TrainingArguments

model = GPT2LMHeadModel(GPT2Config(vocab_size=len(vocab), n_embd=16, n_layer=2, n_head=2, n_positions=64,
                                   pad_token_id=0, eos_token_id=1, bos_token_id=1))
texts = Dataset.from_dict({"text": ["the cat sat on the mat", "1+1=2", "abc abc abc", "hello there"] * 4})
data = texts.map(lambda b: tokenizer(b["text"]), batched=True, remove_columns=["text"])
args = TrainingArguments(output_dir="out", run_name="lm-tiny", report_to="otel_rl", max_steps=4, logging_steps=1,
                         per_device_train_batch_size=4, learning_rate=1e-3, use_cpu=True, save_strategy="no")
Trainer(model=model, args=args, train_dataset=data,
        data_collator=DataCollatorForLanguageModeling(tokenizer, mlm=False)).train()
"""
    _run(code, tmp_path, _config(tmp_path, mlflow_server.url), timeout=300, **HF_ENV)
    for name in BACKENDS:
        scalars = read_scalars(name, tmp_path, "lm-tiny", mlflow_server.url)
        assert sorted(s for s in scalars["train/loss"] if s != "duplicates") == [1, 2, 3, 4], (name, scalars)
        assert sorted(scalars["train/learning_rate"]) == [1, 2, 3, 4], name
        assert 4 in scalars["train/train_runtime"], name
        params = read_params(name, tmp_path, "lm-tiny", mlflow_server.url)
        assert float(params["learning_rate"]) == pytest.approx(1e-3) and int(params["max_steps"]) == 4, name
