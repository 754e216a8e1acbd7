"""``otel-rl`` command line."""

from __future__ import annotations

import argparse
import dataclasses
import sys

from otel_rl.config import ConfigError, load_config


def _check_config(args: argparse.Namespace) -> int:
    try:
        cfg = load_config(args.file)
    except ConfigError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(f"pipeline: {dataclasses.asdict(cfg.pipeline)}")
    for name, backend in cfg.backends.items():
        print(f"{name}: {dataclasses.asdict(backend)}")
    print(f"enabled: {', '.join(cfg.enabled()) or 'none'}")
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="otel-rl", description="OpenTelemetry for RL/LLM training")
    sub = parser.add_subparsers(dest="command", required=True)
    check = sub.add_parser("check-config", help="validate a config file and print the resolved values")
    check.add_argument("file")
    check.set_defaults(func=_check_config)
    args = parser.parse_args(argv)
    return args.func(args)


if __name__ == "__main__":
    raise SystemExit(main())
