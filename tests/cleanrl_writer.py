"""CleanRL's ppo.py logging, unmodified apart from where SummaryWriter comes from (numpy; torch
only for its writer): ``python cleanrl_writer.py otel_rl|tensorboardX|torch LOG_DIR``. Prints a JSON ledger of
(tag, step, value, walltime) for each add_scalar call, so a test can compare backends."""

from __future__ import annotations

import json
import sys
import time

import numpy as np

if sys.argv[1] == "otel_rl":
    from otel_rl import SummaryWriter
elif sys.argv[1] == "torch":
    from torch.utils.tensorboard import SummaryWriter
else:
    from tensorboardX import SummaryWriter

run_name = "CartPole-v1__ppo__1__1700000000"
args = {"env_id": "CartPole-v1", "learning_rate": 2.5e-4, "num_envs": 4, "num_steps": 16, "seed": 1}
writer = SummaryWriter(f"{sys.argv[2]}/{run_name}")
writer.add_text(
    "hyperparameters",
    "|param|value|\n|-|-|\n%s" % ("\n".join([f"|{key}|{value}|" for key, value in args.items()])),
)
rng = np.random.default_rng(1)
ledger = []
global_step = 0
start_time = time.time()
episode_len = np.zeros(args["num_envs"], dtype=int)
for iteration in range(1, 9):
    for step in range(args["num_steps"]):
        global_step += args["num_envs"]
        episode_len += 1
        for env in np.flatnonzero(rng.random(args["num_envs"]) < 0.1):
            writer.add_scalar("charts/episodic_return", float(episode_len[env]), global_step)
            writer.add_scalar("charts/episodic_length", int(episode_len[env]), global_step)
            ledger += [("charts/episodic_return", global_step, float(episode_len[env]), time.time()),
                       ("charts/episodic_length", global_step, float(episode_len[env]), time.time())]
            episode_len[env] = 0
    values = {"charts/learning_rate": args["learning_rate"] * (1 - iteration / 8), "losses/value_loss": rng.random(),
              "losses/policy_loss": rng.normal(), "losses/entropy": rng.random(), "losses/old_approx_kl": rng.random() / 50,
              "losses/approx_kl": rng.random() / 50, "losses/clipfrac": rng.random() / 3,
              "losses/explained_variance": rng.normal(), "charts/SPS": int(global_step / (time.time() - start_time))}
    for tag, value in values.items():
        writer.add_scalar(tag, value, global_step)
        ledger.append((tag, global_step, float(value), time.time()))
    writer.add_histogram("train/advantages", rng.normal(0, 1.5, size=64), global_step)
writer.close()
print(json.dumps(ledger))
