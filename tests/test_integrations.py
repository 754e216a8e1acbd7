"""Where users already log: NeMo-RL's and RLinf's logger configs as they ship, NeMo-RL's Logger
methods, RLinf's ``log(data, step)``, and the Hugging Face Trainer (report_to="otel_rl"),
driven by transformers' own callback machinery; read back from the real backends."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from backends import read_mlflow, read_swanlab, read_wandb
from conftest import read_tensorboard

from otel_rl import ConfigError, Logger
from otel_rl.config import load_config

CONFIGS = Path(__file__).with_name("configs")


def test_nemo_rl_grpo_config_loads_unchanged(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    cfg = load_config(str(CONFIGS / "nemo_rl_grpo_math_1B.yaml"))
    assert cfg.framework == "nemo-rl" and cfg.log_dir == "logs"
    assert cfg.enabled() == {}  # every backend is off in that example
    assert cfg.sources["gpu"].enabled and cfg.sources["gpu"].interval_s == 10.0
    assert cfg.pipeline.run_name == "grpo-dev-logger"
    assert cfg.backends["mlflow"].experiment == "grpo-dev"
    assert cfg.backends["mlflow"].tracking_uri == "http://localhost:5000"


def test_nemo_rl_sft_config_logs_to_the_backends_it_enables(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    logger = Logger(str(CONFIGS / "nemo_rl_sft.yaml"))
    run = logger.pipeline.run_name
    assert run == "sft-dev-${data.train.dataset_name}"
    assert sorted(s.name for s in logger.pipeline.sinks) == ["tensorboard", "wandb"]
    logger.log_hyperparams({"sft": {"max_num_epochs": 3}, "policy": {"model_name": "Qwen/Qwen2.5-1.5B"}})
    for step in range(1, 6):
        logger.log_metrics({"loss": 1.0 / step, "grad_norm": step}, step, prefix="train")
        logger.log_metrics({"val_loss": 2.0 / step}, step, prefix="validation", step_finished=True)
    logger.log_histogram([-1.0, 0.5, 2.0], 5, "train/advantages")
    logger.log_batched_dict_as_jsonl({"prompt": ["a", "b"], "reward": [1.0, 0.0]}, "val_data_step5.jsonl")
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    with pytest.raises(TypeError, match="a figure must be a matplotlib Figure, got object"):
        logger.log_plot(object(), 5, "timeline")
    figure = plt.figure(figsize=(2, 1), dpi=40)
    plt.plot([0, 1], [1, 0])
    logger.log_plot(figure, 5, "timeline")  # NeMo-RL's log_plot: an image at the step
    logger.finish()
    # the backends write under NeMo-RL's log_dir, as NeMo-RL's loggers do
    tb_runs = [p for p in (tmp_path / "logs" / "tensorboard").iterdir() if p.is_dir()]
    assert len(tb_runs) == 1
    tb = read_tensorboard(tb_runs[0])
    assert tb["scalars"]["train/loss"] == pytest.approx({s: 1.0 / s for s in range(1, 6)})
    assert tb["scalars"]["validation/val_loss"] == pytest.approx({s: 2.0 / s for s in range(1, 6)})
    assert tb["histograms"]["train/advantages"][5][:, 2].sum() == 3
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    images = EventAccumulator(str(tb_runs[0]), size_guidance={"images": 0})
    images.Reload()
    assert [(e.step, e.width, e.height) for e in images.Images("timeline")] == [(5, 80, 40)]
    wb = read_wandb(tmp_path / "logs" / "wandb", run)
    assert wb["scalars"]["train/grad_norm"] == {s: float(s) for s in range(1, 6)}
    assert wb["config"]["sft/max_num_epochs"] == 3
    lines = (tmp_path / "logs" / "val_data_step5.jsonl").read_text().splitlines()
    assert [json.loads(x) for x in lines] == [{"prompt": "a", "reward": 1.0}, {"prompt": "b", "reward": 0.0}]


def test_framework_configs_refuse_unknown_keys_with_the_allowed_list():
    with pytest.raises(ConfigError, match="'wandb_enable' is not a nemo-rl logger key; allowed: .*wandb_enabled"):
        load_config({"logger": {"log_dir": "x", "wandb_enable": True, "tensorboard_enabled": True}})
    with pytest.raises(ConfigError, match="wandb.team is not a key of NeMo-RL's wandb config; allowed: entity"):
        load_config({"wandb_enabled": True, "wandb": {"team": "x"}})
    with pytest.raises(ConfigError, match="logger_backends: 'neptune' is not supported; allowed: tensorboard"):
        load_config({"runner": {"logger": {"log_path": "x", "logger_backends": ["neptune"]}}})
    with pytest.raises(ConfigError, match="'log_dir' is not a rlinf logger key"):
        load_config({"runner": {"logger": {"log_path": "x", "log_dir": "y"}}})


def test_rlinf_config_loads_unchanged_and_logs(tmp_path, monkeypatch):
    work = tmp_path / "work"
    work.mkdir()
    monkeypatch.chdir(work)
    logger = Logger(str(CONFIGS / "rlinf_maniskill_ppo.yaml"))
    assert logger.pipeline.run_name == "maniskill_ppo_openvlaoft"
    assert [s.name for s in logger.pipeline.sinks] == ["tensorboard"]
    for step in range(3):
        logger.log({"env/success_rate": step / 10}, step)  # RLinf's MetricLogger.log(data, step)
    logger.finish()
    tb = read_tensorboard(tmp_path / "results" / "tensorboard" / "maniskill_ppo_openvlaoft")
    assert tb["scalars"]["env/success_rate"] == pytest.approx({0: 0.0, 1: 0.1, 2: 0.2})


def test_rlinf_all_backends(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    logger = Logger({"runner": {"logger": {"log_path": "out", "project_name": "rlinf", "experiment_name": "exp1",
                                           "logger_backends": ["tensorboard", "wandb", "swanlab"],
                                           "swanlab_mode": "offline"}}})
    logger.log({"rollout/reward": 1.5}, 7)
    logger.finish()
    assert read_tensorboard(tmp_path / "out" / "tensorboard" / "exp1")["scalars"]["rollout/reward"] == {7: 1.5}
    assert read_wandb(tmp_path / "out" / "wandb", "exp1")["scalars"]["rollout/reward"] == {7: 1.5}
    assert read_swanlab(tmp_path / "out" / "swanlab", "exp1")["scalars"]["rollout/reward"] == {7: 1.5}


def test_hf_trainer_report_to_otel_rl_every_value_at_its_global_step(tmp_path, mlflow_server, monkeypatch):
    """transformers' own machinery: TrainingArguments(report_to="otel_rl") resolved by
    get_reporting_integration_callbacks as the Trainer does, CallbackHandler with the default
    flow callback, events in the Trainer's order (train begin, logging every 2 steps, an
    evaluation, the end-of-training log, train end)."""
    import yaml
    from transformers import TrainerControl, TrainerState, TrainingArguments
    from transformers.integrations import get_reporting_integration_callbacks
    from transformers.trainer_callback import CallbackHandler, DefaultFlowCallback

    import otel_rl.hf  # noqa: F401  (registers report_to="otel_rl")

    config = tmp_path / "otel-rl.yaml"
    config.write_text(yaml.safe_dump({
        "tensorboard": {"log_dir": str(tmp_path / "tb")},
        "wandb": {"enabled": True, "mode": "offline", "dir": str(tmp_path / "wb")},
        "swanlab": {"enabled": True, "mode": "offline", "logdir": str(tmp_path / "sl")},
        "mlflow": {"enabled": True, "tracking_uri": mlflow_server.url, "experiment": f"exp-{tmp_path.name}"}}))
    monkeypatch.setenv("OTEL_RL_CONFIG", str(config))
    args = TrainingArguments(output_dir=str(tmp_path / "out"), report_to="otel_rl", run_name="grpo-hf",
                             logging_steps=2, max_steps=10, learning_rate=1e-5)
    callbacks = [DefaultFlowCallback, *get_reporting_integration_callbacks(args.report_to)]
    assert callbacks[1] is otel_rl.hf.OtelRLCallback
    handler = CallbackHandler(callbacks, None, None, None, None)
    state, control = TrainerState(), TrainerControl()
    state.max_steps = args.max_steps
    state.logging_steps, state.save_steps, state.eval_steps = args.logging_steps, args.save_steps, 500  # as Trainer sets them
    logged: dict[str, dict[int, float]] = {}

    def log(logs: dict) -> None:  # Trainer.log: adds epoch, then on_log
        logs = {**logs, "epoch": state.global_step / 10}
        for key, value in otel_rl.hf.rewrite(logs).items():
            logged.setdefault(key, {})[state.global_step] = value
        handler.on_log(args, state, control, logs=logs)

    control = handler.on_train_begin(args, state, control)
    for step in range(1, 11):
        state.global_step = step
        control = handler.on_step_end(args, state, control)
        if control.should_log:
            log({"loss": 2.0 / step, "grad_norm": 0.5 * step, "learning_rate": 1e-5 * (1 - step / 10)})
            control.should_log = False
        if step == 6:
            log({"eval_loss": 1.25, "eval_runtime": 0.5})
    log({"train_runtime": 12.5, "train_samples_per_second": 3.2, "train_loss": 0.7, "total_flos": 1e12})
    handler.on_train_end(args, state, control)

    assert set(logged) >= {"train/loss", "train/grad_norm", "train/learning_rate", "train/epoch", "eval/loss",
                           "train/train_runtime", "train/train_loss"}
    assert logged["train/loss"] == {s: 2.0 / s for s in (2, 4, 6, 8, 10)}
    tb = read_tensorboard(tmp_path / "tb" / "grpo-hf")["scalars"]
    wb = read_wandb(tmp_path / "wb", "grpo-hf")
    sl = read_swanlab(tmp_path / "sl", "grpo-hf")["scalars"]
    ml = read_mlflow(mlflow_server.url, f"exp-{tmp_path.name}", "grpo-hf")
    for key, steps in logged.items():
        assert tb[key] == pytest.approx(steps, rel=1e-6), (key, tb[key], steps)
        assert wb["scalars"][key] == pytest.approx(steps), ("wandb", key, wb["scalars"][key])
        assert sl[key] == pytest.approx(steps), ("swanlab", key, sl[key])
        # (epoch is logged twice at steps 6 and 10, by the train and eval logs: MLflow keeps both)
        ml_steps = {s: v for s, v in ml["scalars"][key].items() if s != "duplicates"}
        assert ml_steps == pytest.approx(steps), ("mlflow", key, ml["scalars"][key])
    assert wb["config"]["learning_rate"] == 1e-5 and ml["params"]["run_name"] == "grpo-hf"
    assert ml["status"] == "FINISHED"
