"""Collector throughput on one core, and collector RSS under a 10-rank load.

    python bench/collector.py [--seconds 20] [--points-per-request 5000] [--load 0.8] [--ranks 4] [--spool]

Throughput: the collector runs pinned to CPU 0 with the TensorBoard and Prometheus sinks.
The payload is what the real SDK exporter sends: a MetricsData of 500 steps x 10 gauges
(step attribute), encoded by the OTel SDK's OTLP encoder; the first request goes through the
real ``OTLPMetricExporter``, then the same bytes are replayed over one keep-alive HTTP
connection from CPU 1 (so the client's Python encoding is not what is measured). Reported:
points/s from the first request until TensorBoard has written every point. The client sends at
most ``MAX_BODIES`` requests (each a distinct 160 KB body): a collector faster than the client
can build bodies for ends the run early, on the points it had. ``--spool``: also with the
durable ingress and sink spools, as the Helm chart deploys it.

Latency: a fresh collector under an open-loop load of ``--load`` (0.8) times that throughput,
the same requests due at fixed times on 4 connections; p50/p99/max from when each request was
due to its response, and how long after the last response TensorBoard had written everything.

RSS: 10 trainer processes (ranks of one run, world size 10) export through the real SDK
exporter into a fresh collector; the collector's peak RSS is sampled.
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

import psutil

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))


MAX_BODIES = 2_400


def _start_collector(tmp: Path, cpu: int | None, spool: bool = False) -> tuple[subprocess.Popen, int]:
    from backends import free_port

    port, prom = free_port(), free_port()
    (tmp / "c.yaml").write_text(
        (f"spool: {{dir: {tmp / 'spool'}}}\n" if spool else "") +
        f"receivers:\n  http: {{port: {port}}}\n  grpc: {{enabled: false}}\n"
        f"limits: {{max_request_bytes: 67108864, max_queue_points: 5000000}}\n"
        f"tensorboard: {{log_dir: {tmp / 'tb'}}}\nprometheus: {{enabled: true, port: {prom}}}\n")
    preexec = (lambda: os.sched_setaffinity(0, {cpu})) if cpu is not None else None
    proc = subprocess.Popen([sys.executable, "-m", "otel_rl.cli", "collector", "--config", str(tmp / "c.yaml")],
                            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True, preexec_fn=preexec)
    assert "ready" in proc.stdout.readline()
    return proc, port


def _self_metrics(port: int) -> dict:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as r:
        out = {}
        for line in r.read().decode().splitlines():
            if line.startswith("#"):
                continue
            name, _, value = line.rpartition(" ")
            out[name] = float(value)
        return out


def _payload(points: int) -> tuple[object, bytes]:
    from opentelemetry.exporter.otlp.proto.common.metrics_encoder import encode_metrics
    from opentelemetry.sdk.metrics import MeterProvider
    from opentelemetry.sdk.metrics.export import InMemoryMetricReader
    from opentelemetry.sdk.resources import Resource

    from otel_rl.route.sdk import DELTA_TEMPORALITY

    reader = InMemoryMetricReader(preferred_temporality=DELTA_TEMPORALITY,
                                  cardinality_limits={c: points for c in DELTA_TEMPORALITY})
    provider = MeterProvider(resource=Resource.create({"otel_rl.run.id": "tput"}), metric_readers=[reader])
    gauges = [provider.get_meter("b").create_gauge(f"m{i}") for i in range(10)]
    for step in range(points // 10):
        for i, g in enumerate(gauges):
            g.set(step + i, {"step": step})
    data = reader.get_metrics_data()
    return data, encode_metrics(data).SerializeToString()


def _bodies(body: bytes, points: int, count: int, ranks: int = 1) -> list[bytes]:
    """``count`` requests like ``body`` (the SDK's bytes), each at the next ``points // 10``
    steps: what a trainer sends, steps moving forward. Encoded by the protobuf runtime from the
    SDK's message, with only the step attribute's value changed. With ``ranks`` > 1 the requests
    come from ranks 0..ranks-1 in turn (resource ``otel_rl.rank`` and ``otel_rl.world_size``),
    each rank sending the same steps, so the collector reduces every point across the ranks."""
    from opentelemetry.proto.collector.metrics.v1 import metrics_service_pb2 as mpb

    from otel_rl.model.semconv import RANK, WORLD_SIZE

    request = mpb.ExportMetricsServiceRequest()
    request.ParseFromString(body)
    rank_value = None
    if ranks > 1:
        resource = request.resource_metrics[0].resource
        rank_value = resource.attributes.add(key=RANK).value
        resource.attributes.add(key=WORLD_SIZE).value.int_value = ranks
    dps = [dp for rm in request.resource_metrics for sm in rm.scope_metrics for m in sm.metrics
           for dp in m.gauge.data_points]
    base = [dp.attributes[0].value.int_value for dp in dps]
    out = []
    for i in range(count):
        for dp, step in zip(dps, base):
            dp.attributes[0].value.int_value = step + (i // ranks) * (points // 10)
        if rank_value is not None:
            rank_value.int_value = i % ranks
        out.append(request.SerializeToString())
    return out


def throughput(seconds: float, points_per_request: int, repeat_steps: bool = False,
               expected_rate: float = 1_500_000, ranks: int = 1, spool: bool = False) -> dict:
    from opentelemetry.exporter.otlp.proto.http.metric_exporter import OTLPMetricExporter

    os.sched_setaffinity(0, {1 % os.cpu_count()})
    with tempfile.TemporaryDirectory() as tmpdir:
        proc, port = _start_collector(Path(tmpdir), cpu=0, spool=spool)
        try:
            data, body = _payload(points_per_request)
            # one body per request: steps go forward (--repeat-steps: the same steps every time,
            # which TensorBoard takes as steps going backwards, written to late sub-runs)
            # (at most MAX_BODIES, 160 KB each: a faster collector ends the run early, on the
            # points it had, rather than the client building gigabytes of requests)
            count = 1 if repeat_steps else min(int(expected_rate * seconds / points_per_request) + 2, MAX_BODIES)
            if ranks > 1:  # every request from a rank; the SDK's first one is not sent
                bodies = _bodies(body, points_per_request, count - count % ranks, ranks)
            else:
                bodies = _bodies(body, points_per_request, count + 1)[1:]
            t0 = time.perf_counter()
            sent = 0
            if ranks == 1:
                OTLPMetricExporter(endpoint=f"http://127.0.0.1:{port}/v1/metrics").export(data)
                sent = points_per_request
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
            rejected, i = 0, 0
            while (time.perf_counter() - t0 < seconds or i % ranks) and (repeat_steps or i < len(bodies)):
                body = bodies[i % len(bodies)]
                i += 1
                conn.request("POST", "/v1/metrics", body, {"Content-Type": "application/x-protobuf"})
                response = conn.getresponse()
                response.read()
                if response.status == 200:
                    sent += points_per_request
                else:
                    rejected += 1
                    i -= 1  # the same request again
                    time.sleep(0.5)
            sending = time.perf_counter() - t0
            key = 'otel_rl_collector_sink_exported_points_total{run="otel-rl-collector",sink="tensorboard"}'
            while _self_metrics(port).get(key, 0) < sent // ranks:  # reduced: one point per rank group
                time.sleep(0.2)
            elapsed = time.perf_counter() - t0
            rss = psutil.Process(proc.pid).memory_info().rss / 2**20
        finally:
            proc.terminate()
            proc.wait(60)
    return {"points": sent, "ranks": ranks, "seconds": elapsed, "points_per_s": sent / elapsed,
            "busy_replies": rejected,
            "last_response_s": sending,
            "collector_rss_mb": rss}


def latency(points_per_s: float, seconds: float, points_per_request: int) -> dict:
    """Request latency under an open-loop load of ``points_per_s``: requests are due at fixed
    times and sent on 4 keep-alive connections; a request's latency runs from when it was due
    (so a collector that falls behind is charged for the wait, not hidden by it) to its response.
    Also how long after the last request TensorBoard had written everything."""
    import statistics
    import threading

    os.sched_setaffinity(0, {1 % os.cpu_count()})
    interval = points_per_request / points_per_s
    count = min(int(seconds / interval), MAX_BODIES)
    with tempfile.TemporaryDirectory() as tmpdir:
        proc, port = _start_collector(Path(tmpdir), cpu=0)
        try:
            _, body = _payload(points_per_request)
            bodies = _bodies(body, points_per_request, count)
            latencies: list[float] = []
            failures = []
            lock = threading.Lock()
            t0 = time.perf_counter() + 0.5
            next_index = iter(range(count))

            def sender() -> None:
                conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
                for i in next_index:  # shared: each request is taken by one sender
                    due = t0 + i * interval
                    wait = due - time.perf_counter()
                    if wait > 0:
                        time.sleep(wait)
                    conn.request("POST", "/v1/metrics", bodies[i], {"Content-Type": "application/x-protobuf"})
                    response = conn.getresponse()
                    response.read()
                    with lock:
                        latencies.append(time.perf_counter() - due)
                        if response.status != 200:
                            failures.append(response.status)

            threads = [threading.Thread(target=sender) for _ in range(4)]
            for t in threads:
                t.start()
            for t in threads:
                t.join()
            sent_at = time.perf_counter()
            key = 'otel_rl_collector_sink_exported_points_total{run="otel-rl-collector",sink="tensorboard"}'
            while _self_metrics(port).get(key, 0) < count * points_per_request:
                time.sleep(0.05)
            drained = time.perf_counter() - sent_at
        finally:
            proc.terminate()
            proc.wait(60)
    q = statistics.quantiles(latencies, n=100)
    return {"offered_points_per_s": points_per_s, "requests": count, "points_per_request": points_per_request,
            "failed": len(failures), "p50_ms": 1000 * statistics.median(latencies), "p99_ms": 1000 * q[98],
            "max_ms": 1000 * max(latencies), "written_after_last_response_s": drained}


RANK = """
import os, sys, otel_rl
otel_rl.init({"run_name": "ten", "export_interval_s": 0.2, "tensorboard": {"enabled": False},
              "otlp": {"enabled": True, "endpoint": sys.argv[1]}})
meter = otel_rl.get_pipeline().get_meter("r")
gauges = [meter.create_gauge(f"m{i}") for i in range(10)]
for step in range(int(sys.argv[2])):
    otel_rl.set_step(step)
    for i, g in enumerate(gauges):
        g.set(step * i)
otel_rl.shutdown()
"""


def ten_ranks(steps: int) -> dict:
    with tempfile.TemporaryDirectory() as tmpdir:
        proc, port = _start_collector(Path(tmpdir), cpu=None)
        collector = psutil.Process(proc.pid)
        base = collector.memory_info().rss
        ranks = [subprocess.Popen([sys.executable, "-c", RANK, f"http://127.0.0.1:{port}", str(steps)],
                                  env={**os.environ, "RANK": str(r), "WORLD_SIZE": "10"}) for r in range(10)]
        peak = base
        while any(r.poll() is None for r in ranks):
            peak = max(peak, collector.memory_info().rss)
            time.sleep(0.1)
        time.sleep(1.0)
        metrics = _self_metrics(port)
        peak = max(peak, collector.memory_info().rss)
        proc.terminate()
        proc.wait(60)
    return {"ranks": 10, "steps": steps, "received_points": metrics['otel_rl_collector_received_points_total{run="otel-rl-collector"}'],
            "rss_start_mb": base / 2**20, "rss_peak_mb": peak / 2**20}


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--seconds", type=float, default=20.0)
    parser.add_argument("--points-per-request", type=int, default=5000)
    parser.add_argument("--rank-steps", type=int, default=2000)
    parser.add_argument("--ranks", type=int, default=1,
                        help="also measure throughput with this many ranks of one run, reduced across ranks")
    parser.add_argument("--load", type=float, default=0.8,
                        help="the latency run's load, as a fraction of the measured throughput")
    parser.add_argument("--spool", action="store_true",
                        help="also measure throughput with a spool (durable ingress and sink queues, as the Helm chart deploys it)")
    parser.add_argument("--repeat-steps", action="store_true",
                        help="send the same steps in every request (the benchmark before 2026-11-28)")
    args = parser.parse_args()
    measured = throughput(args.seconds, args.points_per_request, args.repeat_steps)
    print(json.dumps({"throughput": measured}))
    if args.ranks > 1:
        print(json.dumps({"reduced": throughput(args.seconds, args.points_per_request, ranks=args.ranks)}))
    if args.spool:
        print(json.dumps({"spooled": throughput(args.seconds, args.points_per_request, spool=True)}))
    if not args.repeat_steps:
        load = args.load * measured["points_per_s"]
        print(json.dumps({"latency": latency(load, args.seconds, args.points_per_request)}))
    print(json.dumps({"ten_ranks": ten_ranks(args.rank_steps)}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
