"""A legitimate client's latency while hostile clients hit the collector (docs/collector.md,
"Running it exposed").

    python bench/exposed.py [--requests 300]

The collector runs in its own process with auth on and the chart's limits. A legitimate client
(127.0.0.1) sends small OTLP/HTTP requests (10 gauges, one step each) one after the other, first
alone, then while hostile clients on other loopback addresses, all at once:
- hold 200 requests whose body stalls, and 50 that never finish a request line;
- keep sending 8 MB bodies with a wrong token;
- hold 300 silent TCP connections, reopening those the collector closes;
- keep 20 token-less gRPC calls open that never send their message;
- send log-table bombs (4,000 records with a distinct key each);
- send requests as large as the limits let them decode (10,000 resource blocks, 190,000
  single-point metrics), which hold the admission lock the longest.
Reported: the legitimate client's p50/p99 latency in both phases, its errors, and the collector's
RSS (peak while attacked).
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


def _connect(port: int, source: str, timeout: float | None = None) -> socket.socket:
    return socket.create_connection(("127.0.0.1", port), timeout=timeout, source_address=(source, 0))


def _silent(port: int, stop: threading.Event) -> None:
    """300 silent connections from 6 addresses, reopened as the collector closes them."""
    socks: list[socket.socket] = []
    while not stop.is_set():
        socks = [s for s in socks if s.fileno() != -1]
        while len(socks) < 300:
            try:
                socks.append(_connect(port, f"127.0.1.{2 + len(socks) % 6}"))
            except OSError:
                break
        stop.wait(1.0)
        for s in list(socks):
            s.setblocking(False)
            try:
                if s.recv(1) == b"":
                    s.close()
            except BlockingIOError:
                pass
            except OSError:
                s.close()
    for s in socks:
        s.close()


def _grpc_tokenless(grpc_port: int, stop: threading.Event) -> None:
    import grpc

    channel = grpc.insecure_channel(f"127.0.0.1:{grpc_port}")
    export = channel.stream_unary("/opentelemetry.proto.collector.metrics.v1.MetricsService/Export")

    def never():
        stop.wait(600)
        yield b""

    while not stop.is_set():
        calls = [export.future(never(), timeout=30) for _ in range(20)]
        for call in calls:
            try:
                call.result(timeout=30)
            except Exception:  # noqa: BLE001 - UNAUTHENTICATED is the point
                pass
    channel.close()


def _post_as(port: int, source: str, body: bytes, path: str = "/v1/metrics") -> None:
    with _connect(port, source, 60) as s:
        s.sendall(f"POST {path} HTTP/1.1\r\nHost: x\r\nContent-Type: application/x-protobuf\r\n"
                  f"Authorization: Bearer {TOKEN}\r\nContent-Length: {len(body)}\r\n\r\n".encode() + body)
        s.recv(4096)


def _bombs(port: int, stop: threading.Event) -> None:
    """Log-table bombs and requests as big as the limits let them decode, with the token."""
    from opentelemetry.proto.collector.logs.v1 import logs_service_pb2 as lpb
    from opentelemetry.proto.collector.metrics.v1 import metrics_service_pb2 as mpb

    logs = lpb.ExportLogsServiceRequest()
    rl = logs.resource_logs.add()
    kv = rl.resource.attributes.add()
    kv.key, kv.value.string_value = "otel_rl.run.id", "bomb"
    scope = rl.scope_logs.add()
    for i in range(4000):
        record = scope.log_records.add()
        record.event_name = "t"
        item = record.body.kvlist_value.values.add()
        item.key, item.value.string_value = f"k{i}", "v"
    big = mpb.ExportMetricsServiceRequest()
    for i in range(10_000):
        rm = big.resource_metrics.add()
        for key, value in (("otel_rl.run.id", f"big{i % 10}"), ("otel_rl.sender.id", "big"),
                           ("otel_rl.batch.id", str(i))):
            kv = rm.resource.attributes.add()
            kv.key, kv.value.string_value = key, value
        sm = rm.scope_metrics.add()
        for j in range(9):
            metric = sm.metrics.add()
            metric.name = f"m{j}"
            dp = metric.gauge.data_points.add()
            dp.as_double, dp.time_unix_nano = 1.0, time.time_ns()
    bodies = [("/v1/logs", logs.SerializeToString()), ("/v1/metrics", big.SerializeToString())]
    while not stop.is_set():
        for path, body in bodies:
            try:
                _post_as(port, "127.0.2.2", body, path)
            except OSError:
                stop.wait(0.1)


def _attack(port: int, stop: threading.Event, held: list) -> None:
    for _ in range(200):  # stalled bodies (the read timeout ends them; they come back)
        s = _connect(port, f"127.0.3.{2 + len(held) % 8}")
        s.sendall(b"POST /v1/metrics HTTP/1.1\r\nHost: x\r\nContent-Type: application/x-protobuf\r\n"
                  + f"Authorization: Bearer {TOKEN}\r\nContent-Length: 100000\r\n\r\n".encode() + b"\0" * 100)
        held.append(s)
    for _ in range(50):  # never finish the request line
        s = _connect(port, f"127.0.3.{2 + len(held) % 8}")
        s.sendall(b"POST /v1/met")
        held.append(s)
    body = b"\0" * (8 << 20)
    while not stop.is_set():  # 8 MB bodies with a wrong token
        try:
            with _connect(port, "127.0.4.2", 10) as s:
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
    port, grpc_port = free_port(), free_port()
    # max_connections above the attack's 550 held connections, as an operator sizes it
    (tmp / "c.yaml").write_text(f"receivers: {{http: {{port: {port}}}, grpc: {{port: {grpc_port}}}}}\n"
                                f"auth: {{token_file: {tmp / 'token'}}}\nlimits: {{max_connections: 1024}}\n"
                                f"spool: {{dir: {tmp / 'spool'}}}\ntensorboard: {{log_dir: {tmp / 'tb'}}}\n")
    proc = subprocess.Popen([sys.executable, "-m", "otel_rl.cli", "collector", "--config", str(tmp / "c.yaml")],
                            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    assert "ready" in proc.stdout.readline()
    try:
        rss = psutil.Process(proc.pid)
        quiet, quiet_errors = _latencies(port, args.requests, 0)
        stop, held = threading.Event(), []
        attackers = [threading.Thread(target=_attack, args=(port, stop, held), daemon=True),
                     threading.Thread(target=_silent, args=(port, stop), daemon=True),
                     threading.Thread(target=_grpc_tokenless, args=(grpc_port, stop), daemon=True),
                     threading.Thread(target=_bombs, args=(port, stop), daemon=True)]
        for attacker in attackers:
            attacker.start()
        time.sleep(2)
        rss_before, peak = rss.memory_info().rss, [0]

        def watch() -> None:
            while not stop.is_set():
                peak[0] = max(peak[0], rss.memory_info().rss)
                stop.wait(0.2)

        threading.Thread(target=watch, daemon=True).start()
        loud, loud_errors = _latencies(port, args.requests, args.requests)
        rss_after = rss.memory_info().rss
        stop.set()
        for attacker in attackers:
            attacker.join(30)
        for s in held:
            s.close()
        result = {"requests": args.requests,
                  "alone_ms": {"p50": _pct(quiet, 0.5), "p99": _pct(quiet, 0.99)}, "alone_errors": quiet_errors,
                  "attacked_ms": {"p50": _pct(loud, 0.5), "p99": _pct(loud, 0.99)}, "attacked_errors": loud_errors,
                  "collector_rss_mb": {"attack_started": rss_before / 2**20, "attack_end": rss_after / 2**20,
                                       "attack_peak": peak[0] / 2**20}}
        print(json.dumps(result))
    finally:
        proc.terminate()
        proc.wait(30)
    return 0


if __name__ == "__main__":
    sys.exit(main())
