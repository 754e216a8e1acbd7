"""Where one part hands over to the next: a batch the collector refuses, kept and sent later."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys

from conftest import exactly_once, read_tensorboard_events

from otel_rl_collector import create

TOKEN = "s3cret-token"

TRAINER = """
import json, otel_rl
from opentelemetry import metrics
otel_rl.init({"run_name": "tok", "export_interval_s": 0.1, "tensorboard": {"enabled": False},
              "system_metrics": {"enabled": False},
              "otlp": {"enabled": True, "endpoint": %r, "timeout_s": 5}})
loss = metrics.get_meter("t").create_gauge("loss")
for step in range(20):
    otel_rl.set_step(step)
    loss.set(float(step))
print(json.dumps({"delivered": otel_rl.shutdown(timeout_s=30)}))
"""


def test_a_refused_batch_is_kept_reported_and_sent_by_the_command_the_log_gives(tmp_path):
    """A trainer with a mistyped token gets 401: shutdown() says not delivered, the log gives the
    collector's reason (decoded, not protobuf bytes), where the data is and the exact command;
    the run's folder, replayed with the right token, brings every step to the collector once; the
    sink's own command then says there is nothing left."""
    token = tmp_path / "token"
    token.write_text(TOKEN)
    collector = create({"receivers": {"http": {"port": 0}, "grpc": {"enabled": False}},
                        "auth": {"token_file": str(token)}, "reduce": {"timeout_s": 1},
                        "tensorboard": {"log_dir": str(tmp_path / "tb")}}).start()
    url = f"http://127.0.0.1:{collector.http_port}"
    state = tmp_path / "state"
    env = {**os.environ, "XDG_STATE_HOME": str(state)}
    env.pop("OTEL_RL_HELPER_DIR", None)
    try:
        proc = subprocess.run([sys.executable, "-c", TRAINER % url], capture_output=True, text=True, timeout=120,
                              env={**env, "OTEL_EXPORTER_OTLP_HEADERS": "Authorization=Bearer wrong"})
        assert proc.returncode == 0, proc.stderr[-3000:]
        assert json.loads(proc.stdout.strip().splitlines()[-1]) == {"delivered": False}
        assert "missing or wrong bearer token" in proc.stderr and "\\x08" not in proc.stderr
        command = re.search(r"send them with: otel-rl replay (\S+) --to (\S+)", proc.stderr)
        assert command, proc.stderr[-3000:]
        spool, target = command.groups()
        assert spool.startswith(str(state / "otel-rl" / "spool")) and target == f"otlp:{url}"
        assert list((state / "otel-rl" / "spool").rglob("quarantine/refused-*.json"))  # kept, not deleted

        root = re.search(r"send it with `otel-rl replay (\S+)`", proc.stderr)
        assert root and spool.startswith(root.group(1)), proc.stderr[-3000:]

        fixed = {**env, "OTEL_EXPORTER_OTLP_HEADERS": f"Authorization=Bearer {TOKEN}"}
        sent = subprocess.run([sys.executable, "-m", "otel_rl.cli", "replay", root.group(1)],  # every sink under it
                              capture_output=True, text=True, timeout=120, env=fixed)
        assert sent.returncode == 0, sent.stderr[-3000:]
        again = subprocess.run([sys.executable, "-m", "otel_rl.cli", "replay", spool, "--to", target],
                               capture_output=True, text=True, timeout=120, env=fixed)
        assert again.returncode == 0 and "nothing left to send" in again.stderr, again.stderr[-3000:]
    finally:
        collector.shutdown()
    assert exactly_once(read_tensorboard_events(tmp_path / "tb" / "tok")["loss"]) == {s: float(s) for s in range(20)}


def test_a_failing_sink_makes_the_collector_not_ready_and_its_acknowledged_points_wait_in_the_spool(tmp_path):
    """TensorBoard's log dir is unwritable: /ready says 503 (the chart's readiness probe) while
    /health stays 200; SIGTERM says where the acknowledged points are; the next start with the
    directory writable delivers every one of them once."""
    import signal
    import time
    import urllib.error
    import urllib.request

    from backends import free_port
    from trainers import start_collector

    port = free_port()
    blocker = tmp_path / "tb"
    blocker.write_text("not a directory")
    config = tmp_path / "collector.yaml"
    config.write_text(f"receivers:\n  http: {{port: {port}}}\n  grpc: {{enabled: false}}\n"
                      f"spool: {{dir: {tmp_path / 'spool'}}}\nreduce: {{timeout_s: 0.2}}\n"
                      f"retry: {{initial_backoff_s: 0.1, max_backoff_s: 0.5}}\n"
                      f"tensorboard: {{log_dir: {blocker}}}\nprometheus: {{enabled: false}}\n")

    def get(path: str) -> int:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=10) as r:
                return r.status
        except urllib.error.HTTPError as exc:
            return exc.code

    collector = start_collector(config, stderr=True)
    try:
        for step in range(30):
            request = urllib.request.Request(f"http://127.0.0.1:{port}/v1/metrics", method="POST",
                                             data=_gauge_request("ro", step, float(step)).SerializeToString(),
                                             headers={"Content-Type": "application/x-protobuf"})
            with urllib.request.urlopen(request, timeout=10) as r:
                assert r.status == 200  # acknowledged
        deadline = time.monotonic() + 30
        while get("/ready") != 503 and time.monotonic() < deadline:
            time.sleep(0.1)
        assert get("/ready") == 503 and get("/health") == 200
        collector.send_signal(signal.SIGTERM)
        _, err = collector.communicate(timeout=90)
    finally:
        if collector.poll() is None:
            collector.kill()
    assert "acknowledged points kept in its spool" in err and "NOT delivered" not in err, err[-3000:]
    blocker.unlink()
    collector = start_collector(config, stderr=True)
    deadline = time.monotonic() + 60
    while get("/ready") != 200 and time.monotonic() < deadline:
        time.sleep(0.1)
    collector.send_signal(signal.SIGTERM)
    _, err = collector.communicate(timeout=90)
    assert "everything acknowledged was delivered" in err, err[-3000:]
    assert exactly_once(read_tensorboard_events(blocker / "ro")["loss"]) == {s: float(s) for s in range(30)}


def _gauge_request(run: str, step: int, value: float):
    from opentelemetry.proto.collector.metrics.v1 import metrics_service_pb2 as mpb

    request = mpb.ExportMetricsServiceRequest()
    rm = request.resource_metrics.add()
    attr = rm.resource.attributes.add()
    attr.key, attr.value.string_value = "otel_rl.run.id", run
    metric = rm.scope_metrics.add().metrics.add()
    metric.name = "loss"
    dp = metric.gauge.data_points.add()
    dp.as_double, dp.time_unix_nano = value, 1_700_000_000_000_000_000 + step
    step_attr = dp.attributes.add()
    step_attr.key, step_attr.value.int_value = "step", step
    return request


RANK = """
import os, sys, time, otel_rl
from opentelemetry import metrics
otel_rl.init({"run_name": "late", "export_interval_s": 0.1, "tensorboard": {"enabled": False},
              "system_metrics": {"enabled": False}, "otlp": {"enabled": True, "endpoint": sys.argv[1]}})
meter = metrics.get_meter("t")
loss, tokens = meter.create_gauge("loss"), meter.create_counter("tokens")
rank = int(os.environ["RANK"])
for step in range(40):
    otel_rl.set_step(step)
    loss.set(rank + 1.0)
    tokens.add(100 * (rank + 1))
    time.sleep(0.05)
assert otel_rl.shutdown(timeout_s=60)
"""


def test_a_rank_later_than_the_reduce_timeout_still_gives_true_counter_totals(tmp_path):
    """Rank 1 starts 8 s after rank 0 (models load at different speeds), past the 1 s reduce
    timeout: in a real TensorBoard server with default flags, the run's counter shows the true
    total at every step (300 per step across the ranks), and the gauge's latest value at each
    step is the true mean."""
    import time

    from backends import TensorBoardServer
    from conftest import read_tensorboard

    collector = create({"receivers": {"http": {"port": 0}, "grpc": {"enabled": False}},
                        "reduce": {"timeout_s": 1}, "tensorboard": {"log_dir": str(tmp_path / "tb")}}).start()
    url = f"http://127.0.0.1:{collector.http_port}"
    env = {**os.environ, "WORLD_SIZE": "2"}
    try:
        first = subprocess.Popen([sys.executable, "-c", RANK, url], env={**env, "RANK": "0"})
        time.sleep(8)
        second = subprocess.Popen([sys.executable, "-c", RANK, url], env={**env, "RANK": "1"})
        assert first.wait(120) == 0 and second.wait(120) == 0
        time.sleep(2)  # past the reduce timeout: the last groups are out
    finally:
        collector.shutdown()
    truth = {s: 300.0 * (s + 1) for s in range(40)}
    latest = {s: v for s, v in read_tensorboard(tmp_path / "tb" / "late")["scalars"]["loss"].items()}
    assert latest == {s: 1.5 for s in range(40)}
    server = TensorBoardServer(tmp_path / "tb").start()
    try:
        server.wait_loaded(["late"], ["tokens"])
        shown = {step: value for _, step, value in server.scalars("late", "tokens")}
    finally:
        server.stop()
    assert shown == truth, {s: (shown.get(s), v) for s, v in truth.items() if shown.get(s) != v}


def test_ranks_exporting_otlp_write_no_local_tensorboard_unless_configured(tmp_path):
    """Two ranks with the defaults plus an OTLP endpoint: no rank writes its own partial view into
    ./runs/<run> (it showed loss 1.0 where the reduced value is 1.5); the collector's run has
    the reduced values."""
    import time

    from conftest import read_tensorboard

    script = RANK.replace('"tensorboard": {"enabled": False},', "").replace('"late"', '"local"')
    collector = create({"receivers": {"http": {"port": 0}, "grpc": {"enabled": False}},
                        "reduce": {"timeout_s": 5}, "tensorboard": {"log_dir": str(tmp_path / "tb")}}).start()
    url = f"http://127.0.0.1:{collector.http_port}"
    try:
        procs = [subprocess.Popen([sys.executable, "-c", script, url], cwd=tmp_path,
                                  env={**os.environ, "WORLD_SIZE": "2", "RANK": str(rank)}) for rank in (0, 1)]
        assert all(p.wait(120) == 0 for p in procs)
        time.sleep(1)
    finally:
        collector.shutdown()
    assert not (tmp_path / "runs").exists()
    assert read_tensorboard(tmp_path / "tb" / "local")["scalars"]["loss"] == {s: 1.5 for s in range(40)}
