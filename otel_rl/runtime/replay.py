"""``otel-rl replay``: send spooled or exported telemetry to a backend later (air-gapped
clusters, a backend that was down, a batch a backend refused until its config was fixed).

Sources:
- a run's spool folder (``<spool_dir>``, ``<spool_dir>/rank-<n>``, or the private folder the
  shutdown message names): every sink spool under it, each to the target it was written for
  (its ``replay-target`` file) unless ``--to`` names another;
- one sink's spool directory (``<spool_dir>/<sink>``, see :mod:`otel_rl.route.spool`):
  unacknowledged batches in order, each acknowledged once delivered, so a replay can be
  interrupted and resumed without duplicates; then the batches the sink refused for good
  (``quarantine/refused-*.json``), each marked ``.sent`` once delivered;
- a JSON-lines file written by the OpenTelemetry Collector's file exporter (one
  ``ExportMetricsServiceRequest`` in OTLP/JSON per line).

Targets (``--to``): ``tensorboard:DIR``, ``mlflow:URI`` (http(s) server or sqlite), ``wandb``
or ``wandb:online``, ``swanlab`` or ``swanlab:cloud``, ``otlp:URL`` (a collector: the ranks'
values are reduced there; headers and TLS from the ``OTEL_EXPORTER_OTLP_*`` env vars).
"""

from __future__ import annotations

import base64
import json
import os
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

from otel_rl.config import load_config
from otel_rl.errors import ConfigError
from otel_rl.model.codec import decode_batch
from otel_rl.route.engine import REPLAY_TARGET
from otel_rl.route.retry import Verdict, classify
from otel_rl.sinks import registry

TARGETS = ("tensorboard", "mlflow", "wandb", "swanlab", "otlp")
_USAGE = "tensorboard:DIR, mlflow:URI, wandb[:online|offline], swanlab[:cloud|offline|local], otlp:URL"


def target_config(target: str, experiment: str | None = None, project: str | None = None) -> tuple[str, dict]:
    kind, _, arg = target.partition(":")
    if kind not in TARGETS:
        raise ConfigError(f"--to: unknown target {target!r}; use one of: {_USAGE}")
    section: dict = {"enabled": True}
    if kind == "tensorboard":
        section["log_dir"] = arg or "runs"
    elif kind in ("mlflow", "otlp"):
        if not arg:
            example = "mlflow:http://127.0.0.1:5000" if kind == "mlflow" else "otlp:http://127.0.0.1:4318"
            raise ConfigError(f"--to {kind}:URL needs the URL, e.g. {example}")
        section["tracking_uri" if kind == "mlflow" else "endpoint"] = arg
        if experiment and kind == "mlflow":
            section["experiment"] = experiment
    else:
        section["mode"] = arg or "offline"
        if project:
            section["project"] = project
    return kind, section


def sink_spools(path: Path) -> list[Path]:
    """The sink spool directories under a run's spool folder, or ``[path]`` for one sink's."""
    if _is_sink_spool(path):
        return [path]
    found = sorted(p for p in path.iterdir() if p.is_dir() and _is_sink_spool(p))
    for rank in sorted(p for p in path.iterdir() if p.is_dir() and p.name.startswith("rank-")):
        found += sink_spools(rank)
    return found


def _is_sink_spool(path: Path) -> bool:
    return (path / REPLAY_TARGET).is_file() or any(path.glob("seg-*.log")) or (path / "quarantine").is_dir()


def sources(path: Path) -> tuple[Iterator, Callable, int | None]:
    """(batches with ack tokens, ack function, total batches or None)."""
    if path.is_dir():
        from otel_rl.route.spool import Spool

        spool = Spool(path)
        refused = sorted((path / "quarantine").glob("refused-*.json"))
        total = sum(1 for _ in spool) + len(refused)

        def items():
            cursor = spool.cursor
            while (item := spool.read(cursor)) is not None:
                batch, cursor = item
                yield batch, cursor
            for kept in refused:
                yield decode_batch(base64.b64decode(json.loads(kept.read_text())["batch"])), kept

        def ack(token) -> None:
            if isinstance(token, Path):
                os.replace(token, token.with_suffix(".json.sent"))
            else:
                spool.ack(token)

        return items(), ack, total
    return _otlp_jsonl(path), (lambda token: None), None


def _otlp_jsonl(path: Path):
    from google.protobuf import json_format
    from opentelemetry.proto.collector.metrics.v1 import metrics_service_pb2 as mpb

    from otel_rl.model.decode import translate_proto
    from otel_rl.route.admit import Stream

    stream = Stream()
    with open(path, encoding="utf-8") as f:
        for number, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                request = json_format.ParseDict(json.loads(line), mpb.ExportMetricsServiceRequest(),
                                                ignore_unknown_fields=True)
            except (ValueError, json_format.ParseError) as exc:
                print(f"\n{path}:{number}: skipped, not an OTLP/JSON metrics request: {exc}", file=sys.stderr)
                continue
            yield stream.admit(translate_proto(request).batch), None


def replay(source: str, target: str | None, experiment: str | None = None, project: str | None = None) -> int:
    if target is not None:
        target_config(target, experiment, project)  # a bad target is an error before anything is read
    path = Path(source)
    if not path.exists():
        print(f"error: {source}: no such spool directory or file", file=sys.stderr)
        return 2
    if not path.is_dir():
        if target is None:
            raise ConfigError(f"--to is needed to replay {source} (use one of: {_USAGE})")
        return _replay_one(path, target, experiment, project)
    spools = sink_spools(path)
    if not spools:
        print(f"error: {source}: no sink spool under it (a folder with seg-*.log files or quarantine/)",
              file=sys.stderr)
        return 2
    worst = 0
    for spool in spools:
        to = target
        if to is None:
            stored = spool / REPLAY_TARGET
            if not stored.is_file():
                raise ConfigError(f"{spool}: no {REPLAY_TARGET} file says where it goes; use --to ({_USAGE})")
            to = stored.read_text().strip()
        print(f"{spool} -> {to}", file=sys.stderr)
        worst = max(worst, _replay_one(spool, to, experiment, project))
    return worst


def _replay_one(path: Path, target: str, experiment: str | None, project: str | None) -> int:
    kind, section = target_config(target, experiment, project)
    exporter = registry.create(kind, load_config({kind: section}).backends[kind])
    items, ack, total = sources(path)
    if total == 0:
        print(f"{path}: nothing left to send (what it held was delivered or replayed already)", file=sys.stderr)
        exporter.shutdown()
        return 0
    done = points = 0
    try:
        for batch, token in items:
            while True:
                try:
                    exporter.write_batch(batch)
                    break
                except Exception as exc:
                    if classify(exc) is not Verdict.TRANSIENT:
                        print(f"\n{kind}: refused a batch of {len(batch)} points ({exc}); stopping",
                              file=sys.stderr)
                        return 1
                    print(f"\n{kind}: not reachable ({exc}); retrying in 2 s (Ctrl-C stops; progress is kept)",
                          file=sys.stderr)
                    time.sleep(2)
            if token is not None:
                ack(token)
            done += 1
            points += len(batch.points)
            _progress(done, total, points)
    finally:
        exporter.shutdown()
    print(f"\nreplayed {done} batches, {points} points to {target}", file=sys.stderr)
    return 0


def _progress(done: int, total: int | None, points: int) -> None:
    if total:
        width = 30
        filled = int(width * done / total)
        bar = "#" * filled + "-" * (width - filled)
        print(f"\r[{bar}] {done}/{total} batches, {points} points", end="", file=sys.stderr, flush=True)
    else:
        print(f"\r{done} batches, {points} points", end="", file=sys.stderr, flush=True)
