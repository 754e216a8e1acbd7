"""All benchmarks in one run, side by side on this machine; writes bench/results.md.

    python bench/run.py            # full (~10 min on 2 cores)
    python bench/run.py --quick    # under 5 minutes; CI runs it and checks only that it completes

Benchmarks, not timed tests: the targets are reported as ratios against the peers measured in
the same run, never asserted.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

import hotpath  # noqa: E402
from bench_common import machine, mlflow_server  # noqa: E402


def _hotpath_table(rows: list[dict]) -> list[str]:
    ok = [r for r in rows if "error" not in r]
    peers = [r for r in ok if not r["logger"].startswith(("otel-rl", "otel sdk"))]
    fastest = min(peers, key=lambda r: r["p50_us"]) if peers else None
    out = ["| logger | p50 µs | p99 µs | mean µs | CPU ms/step (all threads + helpers) | delivered |",
           "|---|---|---|---|---|---|"]
    for r in rows:
        if "error" in r:
            out.append(f"| {r['logger']} | error: {r['error'][-120:]!r} | | | | |")
            continue
        delivered = ""
        if r["delivered"]:
            delivered = ", ".join(f"{k} {v}/{r['expected_per_backend']}" for k, v in r["delivered"].items())
        out.append(f"| {r['logger']} | {r['p50_us']:.1f} | {r['p99_us']:.1f} | {r['mean_us']:.1f} | "
                   f"{r['cpu_ms_per_step']:.2f} | {delivered} |")
    if fastest:
        for r in ok:
            if r["logger"].startswith("otel-rl"):
                out.append(f"\n{r['logger']}: p50 = **{r['p50_us'] / fastest['p50_us']:.3f}x** the fastest peer "
                           f"({fastest['logger']}, {fastest['p50_us']:.1f} µs); target <= 0.2x.")
    return out


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--out", default=str(HERE / "results.md"))
    args = parser.parse_args()
    # quick: each bench once, small (CI checks that they run, not their figures)
    steps, mem_steps, seconds, rank_steps = (200, 30_000, 3, 200) if args.quick else (3000, 1_000_000, 20, 2000)
    started = time.time()
    lines = [f"# otel-rl benchmarks ({'quick' if args.quick else 'full'} mode)", "",
             f"Machine: {machine()}. Date: {time.strftime('%Y-%m-%d')}.", ""]
    short, long, rounds = (100, 400, 1) if args.quick else (1000, 5000, 3)
    kinds = ["otel-rl (tensorboard)", "tensorboardX"] if args.quick else None
    cpu = subprocess.run([sys.executable, str(HERE / "machine.py"), "--short", str(short), "--long", str(long),
                          "--rounds", str(rounds), *(["--only", *kinds] if kinds else [])],
                         capture_output=True, text=True, timeout=3600)
    lines += ["## What logging costs the whole machine: CPU of every process, per step", ""]
    lines += cpu.stdout.strip().splitlines() if cpu.returncode == 0 else [f"error: {cpu.stderr[-500:]}"]
    lines.append("")
    stage_args = ["--steps", "100", "--backends", "tensorboard"] if args.quick else ["--steps", "3000"]
    stages = subprocess.run([sys.executable, str(HERE / "stages.py"), *stage_args],
                            capture_output=True, text=True, timeout=1800)
    lines += ["## Where the CPU goes, stage by stage", ""]
    lines += stages.stdout.strip().splitlines() if stages.returncode == 0 else [f"error: {stages.stderr[-500:]}"]
    lines.append("")
    with mlflow_server() as url:
        for gap in (1.0,) if args.quick else (1.0, 0.0):
            # quick: otel-rl with every backend and two peers (each peer's SDK start costs seconds)
            quick = ["otel-rl (4 backends)", "otel sdk (10 gauges)", "tensorboardX"] if args.quick else None
            rows = hotpath.run_all(steps, gap, url, only=quick)
            lines += [f"## Hot path: 10 scalars per step, {steps} steps, {gap:g} ms compute gap", ""]
            lines += _hotpath_table(rows) + [""]
    lat = subprocess.run([sys.executable, str(HERE / "latency.py"), "--steps", str(min(steps, 300))],
                         capture_output=True, text=True, timeout=600)
    lines += ["## Delivery: log call to readable in TensorBoard", "",
              "Every value of the hot-path runs above was counted in every backend (column *delivered*).", "",
              "| export interval | steps seen | p50 ms | p99 ms | mean ms |", "|---|---|---|---|---|"]
    for row in (json.loads(x) for x in lat.stdout.splitlines() if x.startswith("{")):
        lines.append(f"| {row['export_interval_s']:g} s | {row['seen']}/{row['steps']} | {row['p50_ms']:.0f} | "
                     f"{row['p99_ms']:.0f} | {row['mean_ms']:.0f} |")
    if lat.returncode != 0:
        lines.append(f"error: {lat.stderr[-500:]}")
    lines.append("")
    out = subprocess.run([sys.executable, str(HERE / "collector.py"), "--seconds", str(seconds),
                          "--rank-steps", str(rank_steps), "--ranks", "4", "--spool"], capture_output=True, text=True,
                         timeout=1200)
    results = {k: v for x in out.stdout.splitlines() if x.startswith("{") for k, v in json.loads(x).items()}
    if out.returncode != 0 or set(results) != {"throughput", "reduced", "spooled", "latency", "ten_ranks"}:
        lines += ["## Collector", "", f"error: {out.stderr[-500:]}", ""]
    else:
        t, lat, r = results["throughput"], results["latency"], results["ten_ranks"]
        red, spooled = results["reduced"], results["spooled"]
        lines += ["## Collector", "",
                  f"- Throughput, collector pinned to 1 core, TensorBoard + Prometheus sinks: "
                  f"**{t['points_per_s']:,.0f} points/s** ({t['points']:,} points in {t['seconds']:.1f} s, until "
                  f"TensorBoard wrote the last one; target 500,000/s); collector RSS {t['collector_rss_mb']:.0f} MB.",
                  f"- The same from 4 ranks of one run, every point reduced across them: "
                  f"**{red['points_per_s']:,.0f} received points/s** ({red['points']:,} points in "
                  f"{red['seconds']:.1f} s; target 300,000/s).",
                  f"- One rank with a spool (durable ingress and sink queues, as the Helm chart deploys it): "
                  f"**{spooled['points_per_s']:,.0f} points/s**.",
                  f"- Request latency at {lat['offered_points_per_s']:,.0f} points/s (80 % of that, open loop, "
                  f"{lat['points_per_request']:,} points per request): p50 {lat['p50_ms']:.1f} ms, "
                  f"**p99 {lat['p99_ms']:.1f} ms**, max {lat['max_ms']:.1f} ms, {lat['failed']} refused; "
                  f"TensorBoard had everything {lat['written_after_last_response_s']:.2f} s after the last response.",
                  f"- 10 ranks x {r['steps']} steps x 10 gauges through the real SDK exporter: "
                  f"{r['received_points']:,.0f} points received, collector RSS {r['rss_start_mb']:.0f} MB -> "
                  f"peak {r['rss_peak_mb']:.0f} MB.", ""]
    images, videos = (10, 1) if args.quick else (100, 4)
    media = subprocess.run([sys.executable, str(HERE / "media.py"), "--images", str(images), "--videos", str(videos)],
                           capture_output=True, text=True, timeout=1800)
    lines += ["## Media: the training thread and every process, per call", ""]
    lines += [x for x in media.stdout.splitlines() if x.startswith("|")] if media.returncode == 0 else [
        f"error: {media.stderr[-500:]}"]
    lines.append("")
    mem = subprocess.run([sys.executable, str(HERE / "memory.py"), "--steps", str(mem_steps)],
                         capture_output=True, text=True, timeout=1800)
    lines += [f"## Trainer memory over {mem_steps:,} steps (TensorBoard sink)", "",
              mem.stdout.strip() if mem.returncode == 0 else f"error: {mem.stderr[-500:]}", ""]
    lines.append(f"Total bench time: {time.time() - started:.0f} s.")
    text = "\n".join(lines) + "\n"
    Path(args.out).write_text(text)
    print(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
