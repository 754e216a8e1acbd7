"""A CleanRL-PPO-shaped training loop (numpy, no torch) that logs the way CleanRL's ``ppo.py``
does, through the plain OpenTelemetry meter API, and writes a ledger of every value it logged
with the time it logged it. The fidelity suite (tests/test_fidelity.py) compares the ledger
with what each backend holds.

What CleanRL does and this keeps:
- ``global_step`` grows by ``num_envs`` per vector-env step; every finished episode logs
  ``charts/episodic_return`` and ``charts/episodic_length`` at the current ``global_step``, so
  several envs finishing together log several values at one step (often equal ones);
- once per iteration: ``charts/learning_rate``, ``charts/SPS``, ``losses/*`` (mixed-case names
  such as ``losses/approx_KL``), at the iteration's last ``global_step``;
- signed values in histograms (advantages, log-probs).
And, as a vectorised env or an async evaluator does, one value per iteration arrives late, for
a step the loop has already passed (an explicit ``step`` attribute).

Usage: ``python fidelity_ppo.py CONFIG_JSON LEDGER_PATH [SEED]``.
"""

from __future__ import annotations

import json
import sys
import time

import numpy as np
from opentelemetry import metrics

import otel_rl

ITERATIONS, NUM_ENVS, NUM_STEPS = 6, 8, 16


def main(config: dict, ledger_path: str, seed: int = 0) -> None:
    rng = np.random.default_rng(seed)
    otel_rl.init(config)
    otel_rl.log_hyperparams({"learning_rate": 2.5e-4, "num_envs": NUM_ENVS, "seed": seed, "env_id": "CartPole-v1"})
    meter = metrics.get_meter("ppo")
    gauges = {name: meter.create_gauge(name) for name in (
        "charts/episodic_return", "charts/episodic_length", "charts/learning_rate", "charts/SPS",
        "losses/value_loss", "losses/policy_loss", "losses/approx_KL", "losses/clipfrac")}
    hists = {name: meter.create_histogram(name) for name in ("train/advantages", "train/logprobs")}
    ledger: list = []

    def log(name: str, value: float, step: int, explicit: bool = False) -> None:
        t = time.time()
        gauges[name].set(value, {"step": step} if explicit else None)
        ledger.append(["scalar", name, step, float(value), t])

    global_step = 0
    episode_len = np.zeros(NUM_ENVS, dtype=int)
    start = time.time()
    for iteration in range(1, ITERATIONS + 1):
        for _ in range(NUM_STEPS):
            global_step += NUM_ENVS
            otel_rl.set_step(global_step)
            episode_len += 1
            done = rng.random(NUM_ENVS) < 0.12
            for env in np.flatnonzero(done):
                # CartPole returns are whole numbers: equal values at one step are common
                log("charts/episodic_return", float(episode_len[env]), global_step)
                log("charts/episodic_length", float(episode_len[env]), global_step)
                episode_len[env] = 0
        late_step = global_step - 3 * NUM_ENVS
        log("charts/episodic_return", float(rng.integers(1, 60)), late_step, explicit=True)
        advantages = rng.normal(0.0, 1.5, size=NUM_ENVS * NUM_STEPS)
        logprobs = -rng.exponential(0.7, size=NUM_ENVS * NUM_STEPS)
        for name, samples in (("train/advantages", advantages), ("train/logprobs", logprobs)):
            for v in samples:
                hists[name].record(float(v))
            ledger.append(["histogram", name, global_step, [float(v) for v in samples], time.time()])
        log("charts/learning_rate", 2.5e-4 * (1 - (iteration - 1) / ITERATIONS), global_step)
        log("losses/value_loss", float(rng.random()), global_step)
        log("losses/policy_loss", float(rng.normal()), global_step)
        log("losses/approx_KL", float(rng.random() * 0.02), global_step)
        log("losses/clipfrac", float(rng.random() * 0.3), global_step)
        log("charts/SPS", float(int(global_step / max(time.time() - start, 1e-6))), global_step)
    assert otel_rl.shutdown(60)
    with open(ledger_path, "w") as f:
        json.dump(ledger, f)


if __name__ == "__main__":
    main(json.loads(sys.argv[1]), sys.argv[2], int(sys.argv[3]) if len(sys.argv) > 3 else 0)
