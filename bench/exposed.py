"""A legitimate client's latency while hostile clients hit the collector (README, "Running it
exposed").

    python bench/exposed.py [--requests 300]

The collector runs in its own process with auth on. A legitimate client sends small OTLP/HTTP
requests (10 gauges, one step each) one after the other, first alone, then while, at the same
time: 200 connections hold a request whose body stalls, 50 connections never finish a request
line, and a client keeps sending 8 MB bodies with a wrong token. Reported: the legitimate
client's p50/p99 latency in both phases, its errors, and the collector's RSS.
"""

from __future__ import annotations

import argparse
import json
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path

import psutil

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))
TOKEN = "bench-token"


def _request(step: int) -> bytes:
    from opentelemetry.proto.collector.metrics.v1 import metrics_service_pb2 as mpb

    request = mpb.ExportMetricsServiceRequest()
    rm = request.resource_metrics.add()
    kv = rm.resource.attributes.add()
    kv.key, kv.value.string_value = "otel_rl.run.id", "legit"
    sm = rm.scope_metrics.add()
    for i in range(10):
        metric = sm.metrics.add()
        metric.name = f"m{i}"
        dp = metric.gauge.data_points.add()
        dp.as_double, dp.time_unix_nano = float(step), time.time_ns()
        attr = dp.attributes.add()
        attr.key, attr.value.int_value = "step", step
    return request.SerializeToString()


def _latencies(port: int, n: int, first_step: int) -> tuple[list[float], int]:
    out, errors = [], 0
    for i in range(n):
        req = urllib.request.Request(f"http://127.0.0.1:{port}/v1/metrics", data=_request(first_step + i),
                                     method="POST", headers={"Content-Type": "application/x-protobuf",
                                                             "Authorization": f"Bearer {TOKEN}"})
        t0 = time.perf_counter()
        try:
            with urllib.request.urlopen(req, timeout=30) as r:
                r.read()
            out.append(time.perf_counter() - t0)
        except (urllib.error.URLError, OSError):
            errors += 1
    return out, errors


def _pct(values: list[float], q: float) -> float:
    values = sorted(values)
    return values[min(len(values) - 1, int(q * len(values)))] * 1e3 if values else float("nan")


def _attack(port: int, stop: threading.Event, held: list) -> None:
    for _ in range(200):  # stalled bodies (the read timeout ends them; they come back)
        s = socket.create_connection(("127.0.0.1", port))
        s.sendall(b"POST /v1/metrics HTTP/1.1\r\nHost: x\r\nContent-Type: application/x-protobuf\r\n"
                  + f"Authorization: Bearer {TOKEN}\r\nContent-Length: 100000\r\n\r\n".encode() + b"\0" * 100)
        held.append(s)
    for _ in range(50):  # never finish the request line
        s = socket.create_connection(("127.0.0.1", port))
        s.sendall(b"POST /v1/met")
        held.append(s)
    body = b"\0" * (8 << 20)
    while not stop.is_set():  # 8 MB bodies with a wrong token
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
                s.sendall(b"POST /v1/metrics HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer wrong\r\n"
                          + f"Content-Length: {len(body)}\r\n\r\n".encode())
                try:
                    s.sendall(body)
                except OSError:
                    pass
                s.recv(100)
        except OSError:
            time.sleep(0.01)


def main() -> int:
    from backends import free_port

    parser = argparse.ArgumentParser()
    parser.add_argument("--requests", type=int, default=300)
    args = parser.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="bench-exposed-"))
    (tmp / "token").write_text(TOKEN)
    port = free_port()
    # max_connections above the attack's 250 held connections, as an operator sizes it
    (tmp / "c.yaml").write_text(f"receivers: {{http: {{port: {port}}}, grpc: {{enabled: false}}}}\n"
                                f"auth: {{token_file: {tmp / 'token'}}}\nlimits: {{max_connections: 1024}}\n"
                                f"tensorboard: {{log_dir: {tmp / 'tb'}}}\n")
    proc = subprocess.Popen([sys.executable, "-m", "otel_rl.cli", "collector", "--config", str(tmp / "c.yaml")],
                            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    assert "ready" in proc.stdout.readline()
    try:
        rss = psutil.Process(proc.pid)
        quiet, quiet_errors = _latencies(port, args.requests, 0)
        stop, held = threading.Event(), []
        attacker = threading.Thread(target=_attack, args=(port, stop, held), daemon=True)
        attacker.start()
        time.sleep(2)
        rss_before = rss.memory_info().rss
        loud, loud_errors = _latencies(port, args.requests, args.requests)
        rss_after = rss.memory_info().rss
        stop.set()
        attacker.join(30)
        for s in held:
            s.close()
        result = {"requests": args.requests,
                  "alone_ms": {"p50": _pct(quiet, 0.5), "p99": _pct(quiet, 0.99)}, "alone_errors": quiet_errors,
                  "attacked_ms": {"p50": _pct(loud, 0.5), "p99": _pct(loud, 0.99)}, "attacked_errors": loud_errors,
                  "collector_rss_mb": {"attack_started": rss_before / 2**20, "attack_end": rss_after / 2**20}}
        print(json.dumps(result))
    finally:
        proc.terminate()
        proc.wait(30)
    return 0


if __name__ == "__main__":
    sys.exit(main())
