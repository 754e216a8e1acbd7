"""``otel-rl replay``: send spooled or exported telemetry to a backend later (air-gapped
clusters, a backend that was down, a run to copy elsewhere).

Sources:
- a sink's spool directory (``<spool_dir>/<sink>``, see :mod:`otel_rl.route.spool`): unacknowledged
  batches in order; each is acknowledged once delivered, so a replay can be interrupted and
  resumed without duplicates;
- a JSON-lines file written by the OpenTelemetry Collector's file exporter (one
  ``ExportMetricsServiceRequest`` in OTLP/JSON per line).

Targets (``--to``): ``tensorboard:DIR``, ``mlflow:URI`` (http(s) server or sqlite), ``wandb``
or ``wandb:online``, ``swanlab`` or ``swanlab:cloud``.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

from otel_rl.config import load_config
from otel_rl.errors import ConfigError
from otel_rl.route.retry import Verdict, classify
from otel_rl.sinks import registry

TARGETS = ("tensorboard", "mlflow", "wandb", "swanlab")


def target_config(target: str, experiment: str | None = None, project: str | None = None) -> tuple[str, dict]:
    kind, _, arg = target.partition(":")
    if kind not in TARGETS:
        raise ConfigError(f"--to: unknown target {target!r}; use one of: tensorboard:DIR, mlflow:URI, "
                          "wandb[:online|offline], swanlab[:cloud|offline|local]")
    section: dict = {"enabled": True}
    if kind == "tensorboard":
        section["log_dir"] = arg or "runs"
    elif kind == "mlflow":
        if not arg:
            raise ConfigError("--to mlflow:URI needs the tracking URI, e.g. mlflow:http://127.0.0.1:5000")
        section["tracking_uri"] = arg
        if experiment:
            section["experiment"] = experiment
    else:
        section["mode"] = arg or "offline"
        if project:
            section["project"] = project
    return kind, section


def sources(path: Path):
    """(batches with ack tokens, ack function, total batches or None)."""
    if path.is_dir():
        from otel_rl.route.spool import Spool

        spool = Spool(path)
        total = sum(1 for _ in spool)

        def items():
            cursor = spool.cursor
            while (item := spool.read(cursor)) is not None:
                batch, cursor = item
                yield batch, cursor

        return items(), spool.ack, total
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


def replay(source: str, target: str, experiment: str | None = None, project: str | None = None) -> int:
    path = Path(source)
    if not path.exists():
        print(f"error: {source}: no such spool directory or file", file=sys.stderr)
        return 2
    kind, section = target_config(target, experiment, project)
    exporter = registry.create(kind, load_config({kind: section}).backends[kind])
    items, ack, total = sources(path)
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
