"""CleanRL's ``--capture_video``, with otel-rl: gymnasium's ``RecordVideo`` writes an MP4 per
recorded episode, and each is logged at the training step where its episode ended, next to the
script's own ``SummaryWriter`` scalars. TensorBoard shows it as an animated GIF in the Images
tab; W&B, SwanLab (GIF) and MLflow (an artifact) get the video too.

    python examples/capture_video.py                          # TensorBoard under ./runs/
    python examples/capture_video.py --config my.yaml         # any otel-rl config

Needs ``pip install 'otel-rl[media,demo]' moviepy`` (RecordVideo writes MP4 with moviepy). The
environment draws its own frames (a dot walking on a line), so no display or pygame is needed.
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path

import gymnasium as gym
import numpy as np

import otel_rl
from otel_rl import SummaryWriter


class Walk(gym.Env):
    """A dot on a line of 64 pixels; reach the right edge. ``render()`` gives RGB frames."""

    metadata = {"render_modes": ["rgb_array"], "render_fps": 15}

    def __init__(self, render_mode: str | None = "rgb_array") -> None:
        self.render_mode = render_mode
        self.observation_space = gym.spaces.Box(0.0, 1.0, (1,), np.float32)
        self.action_space = gym.spaces.Discrete(2)
        self.x = 0

    def reset(self, *, seed: int | None = None, options: dict | None = None):
        super().reset(seed=seed)
        self.x = 4
        return np.array([self.x / 63], np.float32), {}

    def step(self, action: int):
        self.x = int(np.clip(self.x + (1 if action else -1) * 3, 0, 63))
        done = self.x >= 60
        return np.array([self.x / 63], np.float32), float(done), done, False, {}

    def render(self) -> np.ndarray:
        frame = np.zeros((64, 64, 3), np.uint8)
        frame[28:36, max(0, self.x - 4):self.x + 4] = (255, 200, 0)
        return frame


def main() -> None:
    parser = argparse.ArgumentParser(description="Record episodes as videos and log them at their step.")
    parser.add_argument("--steps", type=int, default=2000, help="Environment steps to run (default: 2000).")
    parser.add_argument("--every", type=int, default=5, help="Record one episode in this many (default: 5).")
    parser.add_argument("--runs", default="runs", help="Folder for TensorBoard runs and videos (default: runs).")
    parser.add_argument("--config", default=None, help="An otel-rl config (YAML) for more backends.")
    args = parser.parse_args()

    run_name = "capture-video"
    writer = SummaryWriter(f"{args.runs}/{run_name}", config=args.config)  # was: torch.utils.tensorboard
    videos = Path(args.runs) / "videos" / run_name
    env = gym.wrappers.RecordEpisodeStatistics(gym.wrappers.RecordVideo(
        Walk(), str(videos), episode_trigger=lambda episode: episode % args.every == 0, disable_logger=True))
    logged: set[str] = set()
    rng = np.random.default_rng(0)
    env.reset(seed=0)
    for global_step in range(args.steps):
        _, _, terminated, truncated, info = env.step(int(rng.random() < 0.7))
        if terminated or truncated:
            writer.add_scalar("charts/episodic_return", info["episode"]["r"], global_step)
            writer.add_scalar("charts/episodic_length", info["episode"]["l"], global_step)
            env.reset()
            # RecordVideo wrote the episode's MP4 when it ended: log what is new, at this step
            for path in sorted(videos.glob("*.mp4")) if videos.is_dir() else ():
                if path.name not in logged:
                    logged.add(path.name)
                    otel_rl.log_video("videos/episode", path, global_step, caption=path.stem)
    env.close()
    writer.close()
    print(f"{len(logged)} videos logged; view them with: tensorboard --logdir {os.path.abspath(args.runs)}")


if __name__ == "__main__":
    main()
