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
