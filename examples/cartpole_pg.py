"""The otel-rl demo: REINFORCE on gymnasium's CartPole, in numpy, instrumented only
through the OpenTelemetry meter API.

    python examples/cartpole_pg.py                      # TensorBoard under ./runs/
    python examples/cartpole_pg.py --config my.yaml     # any otel-rl config

One training step = one policy update on a batch of episodes. Every metric
is an OTel instrument; ``otel_rl.set_step`` stamps the step on each point.
"""

from __future__ import annotations

import argparse
import json
import logging
import time

import gymnasium as gym
import numpy as np
from opentelemetry import metrics

import otel_rl


class LinearSoftmaxPolicy:
    """pi(a|s) = softmax(W^T [s, 1])."""

    def __init__(self, obs_dim: int, n_actions: int, rng: np.random.Generator) -> None:
        self.w = rng.normal(0.0, 0.01, size=(obs_dim + 1, n_actions))
        self.rng = rng

    def probs(self, feats: np.ndarray) -> np.ndarray:
        logits = feats @ self.w
        logits -= logits.max(axis=-1, keepdims=True)
        e = np.exp(logits)
        return e / e.sum(axis=-1, keepdims=True)

    def act(self, feats: np.ndarray) -> int:
        return int(self.rng.choice(self.w.shape[1], p=self.probs(feats)))


def features(obs: np.ndarray) -> np.ndarray:
    return np.append(obs, 1.0)


def rollout(env, policy: LinearSoftmaxPolicy, seed: int):
    obs, _ = env.reset(seed=seed)
    feats, actions, rewards = [], [], []
    done = False
    while not done:
        f = features(obs)
        a = policy.act(f)
        obs, r, terminated, truncated, _ = env.step(a)
        feats.append(f)
        actions.append(a)
        rewards.append(r)
        done = terminated or truncated
    return np.array(feats), np.array(actions), np.array(rewards)


def discounted(rewards: np.ndarray, gamma: float) -> np.ndarray:
    out = np.zeros_like(rewards)
    running = 0.0
    for t in range(len(rewards) - 1, -1, -1):
        running = rewards[t] + gamma * running
        out[t] = running
    return out


def update(policy, episodes, gamma: float, lr: float):
    """One REINFORCE step with a normalized-return baseline; returns (loss, entropy, grad_norm)."""
    feats = np.concatenate([e[0] for e in episodes])
    actions = np.concatenate([e[1] for e in episodes])
    returns = np.concatenate([discounted(e[2], gamma) for e in episodes])
    adv = (returns - returns.mean()) / (returns.std() + 1e-8)
    probs = policy.probs(feats)
    onehot = np.eye(policy.w.shape[1])[actions]
    logp = np.log(probs[np.arange(len(actions)), actions] + 1e-12)
    loss = float(-(logp * adv).mean())
    entropy = float(-(probs * np.log(probs + 1e-12)).sum(axis=1).mean())
    grad = -feats.T @ ((onehot - probs) * adv[:, None]) / len(actions)
    policy.w -= lr * grad
    return loss, entropy, float(np.linalg.norm(grad))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0].replace("\n", " "),
                                     formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument("--config", help="an otel-rl YAML config (used instead of --backends, --log-dir, --mlflow-uri)")
    parser.add_argument("--backends", default="tensorboard",
                        help="comma-separated subset of tensorboard,wandb,swanlab,mlflow")
    parser.add_argument("--log-dir", default="runs", help="TensorBoard log dir")
    parser.add_argument("--mlflow-uri", default="sqlite:///mlruns/mlflow.db",
                        help="MLflow tracking URI (the default is an embedded store)")
    parser.add_argument("--run-name", default=None, help="run id (default: cartpole-pg-<time>)")
    parser.add_argument("--iterations", type=int, default=150, help="policy updates (training steps)")
    parser.add_argument("--episodes-per-iter", type=int, default=8, help="episodes per policy update")
    parser.add_argument("--lr", type=float, default=2.0, help="initial learning rate (decays linearly to half)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the policy and the environments")
    parser.add_argument("--dump-values", metavar="PATH",
                        help="also write every logged value as JSON {metric: {step: value}} (for tests)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")

    try:
        config = args.config or backends_config(args)
        pipeline = otel_rl.init(config)
    except (otel_rl.ConfigError, ValueError, ImportError) as exc:
        parser.error(str(exc))

    meter = metrics.get_meter("otel_rl.demo.cartpole")
    reward = meter.create_gauge("reward/mean", description="mean episode return")
    reward_max = meter.create_gauge("reward/max")
    ep_len = meter.create_gauge("episode/length", unit="steps")
    loss_g = meter.create_gauge("loss")
    entropy_g = meter.create_gauge("entropy", unit="nats")
    grad_g = meter.create_gauge("grad_norm")
    lr_g = meter.create_gauge("lr")
    returns_h = meter.create_histogram("episode/return_dist")
    env_steps = meter.create_counter("env_steps", unit="steps")
    timing = {phase: meter.create_gauge(f"timing/{phase}", unit="s") for phase in ("rollout", "update", "step")}

    otel_rl.log_hyperparams({"algo": "REINFORCE", "env": "CartPole-v1", "lr": args.lr, "gamma": 0.99,
                             "episodes_per_iter": args.episodes_per_iter, "iterations": args.iterations,
                             "seed": args.seed, "policy": {"kind": "linear-softmax", "obs_dim": 4, "actions": 2}})
    env = gym.make("CartPole-v1")
    policy = LinearSoftmaxPolicy(4, 2, np.random.default_rng(args.seed))
    logged: dict[str, dict[int, float]] = {}
    t_start = time.perf_counter()
    for it in range(args.iterations):
        otel_rl.set_step(it)
        t0 = time.perf_counter()
        episodes = [rollout(env, policy, seed=args.seed * 100_000 + it * args.episodes_per_iter + k)
                    for k in range(args.episodes_per_iter)]
        t1 = time.perf_counter()
        lr = args.lr * (1.0 - 0.5 * it / max(1, args.iterations))
        loss, entropy, grad_norm = update(policy, episodes, gamma=0.99, lr=lr)
        t2 = time.perf_counter()

        totals = [float(e[2].sum()) for e in episodes]
        for total in totals:
            returns_h.record(total)
        values = {
            "reward/mean": (reward, float(np.mean(totals))),
            "reward/max": (reward_max, max(totals)),
            "episode/length": (ep_len, float(np.mean([len(e[2]) for e in episodes]))),
            "loss": (loss_g, loss),
            "entropy": (entropy_g, entropy),
            "grad_norm": (grad_g, grad_norm),
            "lr": (lr_g, lr),
            "timing/rollout": (timing["rollout"], t1 - t0),
            "timing/update": (timing["update"], t2 - t1),
            "timing/step": (timing["step"], time.perf_counter() - t0),
        }
        for name, (gauge, value) in values.items():
            gauge.set(value)
            logged.setdefault(name, {})[it] = value
        n_steps = sum(len(e[2]) for e in episodes)
        env_steps.add(n_steps)
        logged.setdefault("env_steps", {})[it] = logged.get("env_steps", {}).get(it - 1, 0) + n_steps
        if it % 10 == 0 or it == args.iterations - 1:
            # a samples table: the step's episodes (TensorBoard's Text tab, a W&B Table, ...)
            otel_rl.log_samples([{"episode": k, "return": totals[k], "length": len(e[2]),
                                  "first actions": " ".join("LR"[a] for a in e[1][:20])}
                                 for k, e in enumerate(episodes)], name="episodes")
            print(f"step {it:4d}  reward {np.mean(totals):7.1f}  loss {loss:+.4f}  entropy {entropy:.3f}",
                  flush=True)

    env.close()
    if args.dump_values:
        with open(args.dump_values, "w") as f:
            json.dump(logged, f)
    otel_rl.shutdown()
    where = pipeline.describe()  # after shutdown: every backend run is open and written by now
    print(f"\ntrained {args.iterations} steps in {time.perf_counter() - t_start:.1f}s (run {pipeline.run_name})")
    print("telemetry written to:")
    for line in where:
        print(f"  {line}")
    print("view it with:")
    for name, cfg in pipeline.config.enabled().items():
        print(f"  {VIEWERS[name](cfg)}" if name in VIEWERS else f"  ({name})")
    return 0


def _wandb_view(c) -> str:
    if c.mode == "online":
        return "W&B: the run's page (its URL is printed by wandb above)"
    return (f"wandb sync {c.dir}/wandb/latest-run   (uploads the offline run; or in the terminal: "
            f"wandb leet {c.dir}/wandb/latest-run)")


def _swanlab_view(c) -> str:
    if c.mode == "cloud":
        return "SwanLab: the experiment's page on swanlab.cn"
    if c.mode == "local":
        return f"swanlab watch {c.logdir}"
    return f"swanlab sync {c.logdir}/run-*   (uploads the offline run)"


def _mlflow_view(c) -> str:
    if c.tracking_uri.startswith(("http://", "https://")):
        return f"open {c.tracking_uri} (experiment {c.experiment!r})"
    return f"mlflow ui --backend-store-uri {c.tracking_uri}"


VIEWERS = {
    "tensorboard": lambda c: f"tensorboard --logdir {c.log_dir}",
    "mlflow": _mlflow_view,
    "wandb": _wandb_view,
    "swanlab": _swanlab_view,
    "otlp": lambda c: f"the collector at {c.endpoint} writes the run: view it where its backends write",
    "prometheus": lambda c: f"scrape http://{c.host}:{c.port}/metrics (or curl it)",
}


def backends_config(args: argparse.Namespace) -> dict:
    """The config for ``--backends``: each chosen backend enabled, writing under the current dir."""
    sections = {
        "tensorboard": {"log_dir": args.log_dir},
        "wandb": {"mode": "offline", "dir": "."},
        "swanlab": {"mode": "offline", "logdir": "swanlog"},
        "mlflow": {"tracking_uri": args.mlflow_uri, "experiment": "otel-rl-demo"},
    }
    chosen = [b.strip() for b in args.backends.split(",") if b.strip()]
    unknown = [b for b in chosen if b not in sections]
    if unknown:
        raise ValueError(f"--backends: unknown backend {unknown[0]!r}; known: {', '.join(sections)}")
    config = {name: {"enabled": name in chosen, **sections[name]} for name in sections}
    config["run_name"] = args.run_name or time.strftime("cartpole-pg-%Y%m%d-%H%M%S")
    return config


if __name__ == "__main__":
    raise SystemExit(main())
