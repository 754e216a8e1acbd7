"""``otel-rl`` command line."""

from __future__ import annotations

import argparse
import dataclasses
import os
import sys

from otel_rl.config import load_config
from otel_rl.errors import ConfigError

#: Sections only a collector config has: a file with one of them is checked as one.
_COLLECTOR_SECTIONS = {"receivers", "reduce", "auth", "tls", "limits", "spool"}


def _check_config(args: argparse.Namespace) -> int:
    """Validate a trainer config (``otel_rl.init``) or, with ``--collector`` or when the file has a
    collector-only section, a collector config; print the resolved values."""
    from otel_rl.settings import read_mapping

    try:
        collector = args.collector or bool(_COLLECTOR_SECTIONS & set(read_mapping(args.file, "config")))
        if collector:
            try:
                from otel_rl_collector.config import load_collector_config
            except ImportError as exc:
                print(f"error: checking a collector config needs its extra: pip install 'otel-rl[collector]' ({exc})",
                      file=sys.stderr)
                return 2
            ccfg = load_collector_config(args.file)
            print("collector config: valid")
            for field in dataclasses.fields(ccfg):
                value = getattr(ccfg, field.name)
                if field.name == "backends":
                    for name, backend in value.items():
                        print(f"{name}: {dataclasses.asdict(backend)}")
                else:
                    shown = dataclasses.asdict(value) if dataclasses.is_dataclass(value) else value
                    print(f"{field.name}: {shown}")
            return 0
        cfg = load_config(args.file)
    except ConfigError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print("trainer config: valid")
    if cfg.framework:
        print(f"read as a {cfg.framework} logger config (docs/integrations.md)")
    print(f"pipeline: {dataclasses.asdict(cfg.pipeline)}")
    for name, backend in cfg.backends.items():
        print(f"{name}: {dataclasses.asdict(backend)}")
    for name, section in cfg.sources.items():
        print(f"{name}: {dataclasses.asdict(section) if dataclasses.is_dataclass(section) else section}")
    print(f"enabled: {', '.join(cfg.enabled()) or 'none'}")
    return 0


def _collector(args: argparse.Namespace) -> int:
    import logging
    import os
    import signal
    import threading

    level = os.environ.get("OTEL_RL_LOG_LEVEL", "INFO").upper()
    logging.basicConfig(level=getattr(logging, level, logging.INFO),
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        from otel_rl_collector import create
    except ImportError as exc:
        print(f"error: the collector needs its extra: pip install 'otel-rl[collector]' ({exc})", file=sys.stderr)
        return 2
    from otel_rl.errors import SpoolLockedError

    try:
        collector = create(args.config).start()
    except (ConfigError, SpoolLockedError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except OSError as exc:
        print(f"error: {exc.strerror or exc}", file=sys.stderr)
        return 1
    stop = threading.Event()

    def on_signal(number, _frame) -> None:
        logging.getLogger("otel_rl_collector").info("collector: %s received; shutting down",
                                                    signal.Signals(number).name)
        stop.set()

    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, on_signal)
    # Every request allocates thousands of short-lived records: with the default thresholds the
    # cyclic GC runs every 700 allocations and re-scans what is queued (measured: ~0.3 µs per
    # point). What start-up loaded is frozen out of the scans; records are freed by reference
    # counting either way, the GC only finds cycles, and it still runs.
    import gc

    gc.freeze()
    gc.set_threshold(50_000, 20, 20)
    print(f"otel-rl collector ready: http={collector.http_port} grpc={collector.grpc_port}", flush=True)
    # Python runs signal handlers in the main thread, and only between bytecodes: a SIGTERM the
    # kernel hands to another thread (grpc's, the receivers') does not wake a main thread
    # blocked on a lock with no timeout, so the collector would never stop. Waking up every
    # 0.2 s lets the handler run (seen: 1 hang in 24 SIGTERMs under load before this).
    while not stop.wait(0.2):
        pass
    collector.shutdown()
    return 0


def _replay(args: argparse.Namespace) -> int:
    from otel_rl.runtime.replay import replay

    try:
        return replay(args.source, args.to, args.experiment, args.project)
    except ConfigError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2


_BACKENDS = ("tensorboard", "wandb", "swanlab", "mlflow", "prometheus", "otlp")


def _run(args: argparse.Namespace) -> int:
    """``otel-rl run [--config F] [--backends a,b] -- COMMAND...``: COMMAND with every
    ``SummaryWriter`` captured (see :mod:`otel_rl.integrations.tensorboard`), like
    ``opentelemetry-instrument``; its exit status is returned."""
    import subprocess

    from otel_rl.integrations import autoload

    command = args.command_line[1:] if args.command_line[:1] == ["--"] else args.command_line
    if not command:
        print("error: otel-rl run needs a command: otel-rl run -- python train.py", file=sys.stderr)
        return 2
    backends = [b.strip() for b in (args.backends or "").split(",") if b.strip()]
    unknown = [b for b in backends if b not in _BACKENDS]
    if unknown:
        print(f"error: --backends: {', '.join(map(repr, unknown))} is not a backend; allowed: "
              f"{', '.join(_BACKENDS)}", file=sys.stderr)
        return 2
    env = dict(os.environ)
    if args.config:
        try:
            load_config(args.config)  # refused now, with the reason, not in the middle of the run
        except ConfigError as exc:
            print(f"error: {exc}", file=sys.stderr)
            return 2
        env["OTEL_RL_CONFIG"] = os.path.abspath(args.config)
    if backends:
        env["OTEL_RL_BACKENDS"] = ",".join(backends)
    if args.no_tensorboard_files:
        env["OTEL_RL_TENSORBOARD_FILES"] = "0"
    here = os.path.dirname(os.path.abspath(autoload.__file__))
    env["PYTHONPATH"] = os.pathsep.join([here, *filter(None, [env.get("PYTHONPATH")])])
    try:
        return subprocess.call(command, env=env)
    except FileNotFoundError:
        print(f"error: {command[0]!r}: command not found", file=sys.stderr)
        return 127
    except KeyboardInterrupt:
        return 130


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="otel-rl", description="OpenTelemetry for RL/LLM training")
    sub = parser.add_subparsers(dest="command", required=True)
    check = sub.add_parser("check-config", help="validate a config file and print the resolved values")
    check.add_argument("file")
    check.add_argument("--collector", action="store_true",
                       help="check a collector config (the default when the file has a collector-only section)")
    check.set_defaults(func=_check_config)
    coll = sub.add_parser("collector", help="run the collector (OTLP in; ML backends and Prometheus out)")
    coll.add_argument("--config", help="collector YAML (default: all defaults)")
    coll.set_defaults(func=_collector)
    rep = sub.add_parser("replay", help="send a spool (what a backend was down for or refused) or an OTel "
                                        "Collector file-exporter JSONL file to a backend")
    rep.add_argument("source", help="a run's spool folder (every sink under it), one <spool_dir>/<sink> "
                                    "directory, or a .jsonl file of OTLP/JSON requests")
    rep.add_argument("--to", help="tensorboard:DIR | mlflow:URI | wandb[:online] | swanlab[:cloud] | otlp:URL "
                                  "(default: where each spool was written for)")
    rep.add_argument("--experiment", help="MLflow experiment (default: otel-rl)")
    rep.add_argument("--project", help="W&B / SwanLab project (default: otel-rl)")
    rep.set_defaults(func=_replay)
    run = sub.add_parser("run", help="run a command with every SummaryWriter (tensorboardX, torch) also "
                                     "recorded into otel-rl, for the backends of --config / --backends")
    run.add_argument("--config", help="otel-rl config (YAML) for the runs (default: $OTEL_RL_CONFIG)")
    run.add_argument("--backends", help="backends to turn on with their defaults, e.g. wandb,mlflow")
    run.add_argument("--no-tensorboard-files", action="store_true",
                     help="SummaryWriters write no files themselves: otel-rl's TensorBoard sink writes them "
                          "(in the same log directories)")
    run.add_argument("command_line", nargs=argparse.REMAINDER, help="-- COMMAND [ARGS...]")
    run.set_defaults(func=_run)
    args = parser.parse_args(argv)
    try:
        return args.func(args)
    except BrokenPipeError:  # `otel-rl check-config x.yaml | head`: the reader left; not an error
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())  # Python's own flush at exit would fail again
        return 0


if __name__ == "__main__":
    raise SystemExit(main())
