"""The durable spool: order, checkpoints, restart, torn tails, bounds; and a pipeline whose
backend is unreachable until after a restart loses nothing."""

from __future__ import annotations

import ast
import math
import pickle
import subprocess
import sys

import pytest
from backends import read_mlflow

from otel_rl.model.codec import decode_batch, encode_batch
from otel_rl.model.records import Batch, HistogramValue, Point, RunParams
from otel_rl.route.spool import Spool


def _batch(step: int, n: int = 3) -> Batch:
    return Batch([Point("r", f"m{i}", step, step + i / 10, 1.5, "gauge", (("k", "v"),), 2) for i in range(n)])


def test_round_trip_of_every_value_kind():
    hist = HistogramValue(3, 6.0, math.nan, 4.0, ((-math.inf, 1.0, 1), (1.0, math.inf, 2)))
    batch = Batch([Point("r", "h", 1, hist, 2.0, "histogram"), Point("r", "x", 2, math.nan, 3.0),
                   Point("r", "y", 3, -math.inf, 3.0, "counter")], [RunParams("r", {"lr": 0.1, "a": "b"}, 1.0)])
    back = decode_batch(encode_batch(batch))
    assert back.params == batch.params
    assert back.points[0].value.buckets == hist.buckets and math.isnan(back.points[0].value.min)
    assert math.isnan(back.points[1].value) and back.points[2].value == -math.inf


def test_a_reopened_spool_knows_its_last_emission_and_reads_plain_values_only(tmp_path):
    """The emission number of the last record survives a crash (what a restarted process skips),
    and a record that names a class is refused."""
    spool = Spool(tmp_path / "s", fsync=False)
    for emission in (5, 6, 7):
        assert spool.append(Batch(_batch(emission).points, meta={"emission": emission}))
    spool._file.close()
    spool._lock_file.close()  # a SIGKILL: no checkpoint, nothing closed in order
    again = Spool(tmp_path / "s")
    assert again.last_emission == 7
    again.close()
    with pytest.raises(ValueError, match="only plain values"):
        decode_batch(pickle.dumps({"p": [(print,)], "r": []}))


def test_append_read_ack_and_restart_resume_in_order(tmp_path):
    spool = Spool(tmp_path, segment_bytes=600)  # small segments: several files
    for step in range(20):
        assert spool.append(_batch(step))
    cursor, seen = None, []
    for _ in range(8):
        batch, cursor = spool.read(cursor)
        seen.append(batch.points[0].step)
    spool.ack(cursor)
    spool.close()
    again = Spool(tmp_path, segment_bytes=600)
    assert [b.points[0].step for b in again] == list(range(8, 20))
    assert len(list(tmp_path.glob("seg-*.log"))) < 20 // 2  # consumed segments were deleted
    assert seen == list(range(8))


def test_torn_tail_is_cut_and_the_rest_kept(tmp_path):
    spool = Spool(tmp_path)
    for step in range(5):
        spool.append(_batch(step))
    spool.close()
    (segment,) = tmp_path.glob("seg-*.log")
    data = segment.read_bytes()
    segment.write_bytes(data[:-10])  # a crash in the middle of the last write
    again = Spool(tmp_path)
    assert [b.points[0].step for b in again] == [0, 1, 2, 3]
    assert again.append(_batch(9))
    assert [b.points[0].step for b in again] == [0, 1, 2, 3, 9]


def test_full_spool_refuses_and_keeps_what_it_has(tmp_path):
    spool = Spool(tmp_path, max_bytes=2000)
    accepted = sum(spool.append(_batch(step)) for step in range(50))
    assert 0 < accepted < 50
    assert [b.points[0].step for b in spool] == list(range(accepted))


def test_pipeline_spool_survives_a_process_that_never_reached_its_backend(tmp_path, mlflow_server):
    """Process 1 logs while MLflow is unreachable and exits; process 2 (same spool) delivers it all."""
    script = """
import sys, otel_rl
uri, spool, steps = sys.argv[1], sys.argv[2], int(sys.argv[3])
logger = otel_rl.Logger({"run_name": "spooled", "tensorboard": {"enabled": False}, "spool_dir": spool,
                         "mlflow": {"enabled": True, "tracking_uri": uri, "experiment": "spool", "timeout_s": 1}})
for step in range(steps):
    logger.log_metrics({"loss": step * 0.5}, step=step)
logger.finish(timeout_s=float(sys.argv[4]))
"""
    from backends import free_port

    dead = f"http://127.0.0.1:{free_port()}"
    first = subprocess.run([sys.executable, "-c", script, dead, str(tmp_path / "spool"), "50", "2"],
                           capture_output=True, text=True, timeout=120)
    assert first.returncode == 0, first.stderr[-2000:]
    assert "left in the spool" in first.stderr
    # second process: the server is back (its real URI); nothing new logged, the spool is replayed
    # against the same run, which the exporter finds again by its otel_rl.run_id tag.
    replayed = subprocess.run([sys.executable, "-m", "otel_rl.cli", "replay", str(tmp_path / "spool" / "mlflow"),
                               "--to", f"mlflow:{mlflow_server.url}",
                               "--experiment", "spool"], capture_output=True, text=True, timeout=120)
    assert replayed.returncode == 0, replayed.stderr[-2000:]
    history = read_mlflow(mlflow_server.url, "spool", "spooled")["scalars"]["loss"]
    assert history == {s: s * 0.5 for s in range(50)}


@pytest.mark.parametrize("bad", [b"\x00\x00\x00\x10garbage", b""])
def test_corrupt_record_is_quarantined_and_reading_goes_on(tmp_path, bad, caplog):
    """A corrupt record never blocks a start or the reader: it is moved aside and reported, and
    the records after it are still delivered."""
    spool = Spool(tmp_path)
    spool.append(_batch(0))
    spool.append(_batch(1))
    spool.close()
    (segment,) = tmp_path.glob("seg-*.log")
    data = bytearray(segment.read_bytes())
    data[10] ^= 0xFF  # flip a byte of the first record: its CRC no longer matches
    segment.write_bytes(bytes(data) + bad)
    again = Spool(tmp_path)
    assert again.append(_batch(2))
    steps = [b.points[0].step for b in again]
    assert steps == [1, 2]
    assert again.quarantined_records >= 1
    assert list((tmp_path / "quarantine").glob("seg-*.corrupt"))
    assert "corrupt record" in caplog.text


def test_a_spool_directory_is_locked_per_process(tmp_path):
    from otel_rl.errors import SpoolLockedError

    spool = Spool(tmp_path)
    with pytest.raises(SpoolLockedError, match="in use by pid"):
        Spool(tmp_path)
    code = ("import sys; from otel_rl.route.spool import Spool, SpoolLockedError\n"
            "try:\n    Spool(sys.argv[1])\nexcept SpoolLockedError as e:\n    print(e); sys.exit(3)\n")
    proc = subprocess.run([sys.executable, "-c", code, str(tmp_path)], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 3 and "own spool directory" in proc.stdout
    spool.close()
    Spool(tmp_path).close()  # free again once the owner closed it


def test_replay_an_otel_collector_file_exporter_jsonl(tmp_path):
    """The upstream Collector's file exporter writes one OTLP/JSON request per line."""
    import json as _json

    from conftest import ROOT, read_tensorboard

    lines = []
    for step in range(3):
        lines.append(_json.dumps({"resourceMetrics": [{
            "resource": {"attributes": [{"key": "otel_rl.run.id", "value": {"stringValue": "filed"}}]},
            "scopeMetrics": [{"metrics": [{"name": "loss", "gauge": {"dataPoints": [{
                "asDouble": step * 1.5, "timeUnixNano": "1700000000000000000",
                "attributes": [{"key": "step", "value": {"intValue": str(step)}}]}]}}]}]}]}))
    lines.insert(1, "not json at all")
    (tmp_path / "metrics.jsonl").write_text("\n".join(lines) + "\n")
    proc = subprocess.run([sys.executable, "-m", "otel_rl.cli", "replay", str(tmp_path / "metrics.jsonl"),
                           "--to", f"tensorboard:{tmp_path / 'tb'}"], capture_output=True, text=True, timeout=120,
                          cwd=ROOT)
    assert proc.returncode == 0, proc.stderr
    assert "metrics.jsonl:2: skipped" in proc.stderr and "replayed 3 batches, 3 points" in proc.stderr
    assert read_tensorboard(tmp_path / "tb" / "filed")["scalars"]["loss"] == {0: 0.0, 1: 1.5, 2: 3.0}


def test_replay_bad_target_is_a_clear_error(tmp_path):
    proc = subprocess.run([sys.executable, "-m", "otel_rl.cli", "replay", str(tmp_path), "--to", "neptune"],
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 2 and "unknown target 'neptune'" in proc.stderr


def test_batches_replayed_after_a_crash_are_not_duplicated_in_wandb_or_mlflow(tmp_path, mlflow_server):
    """Process 1 delivers everything; the spool checkpoints are then lost (as in a crash right
    after the writes); process 2 replays every batch. W&B (resumed run, fingerprint journal) and
    MLflow (identical rows) each keep one value per (metric, step)."""
    from collections import Counter

    from backends import read_wandb

    script = """
import sys, otel_rl
logger = otel_rl.Logger({"run_name": "idem", "tensorboard": {"enabled": False}, "spool_dir": sys.argv[1],
                         "export_interval_s": 0.2,
                         "wandb": {"enabled": True, "mode": "offline", "dir": sys.argv[2], "project": "t"},
                         "mlflow": {"enabled": True, "tracking_uri": sys.argv[3], "experiment": "idem"}})
for step in range(int(sys.argv[4])):
    logger.log_metrics({"loss": step / 4}, step=step)
logger.finish()
print({k: v["exported_points"] for k, v in logger.pipeline.stats().items() if isinstance(v, dict)})
"""
    spool, wb = tmp_path / "spool", tmp_path / "wb"
    for steps in (30, 0):  # the second process logs nothing new: it only replays
        proc = subprocess.run([sys.executable, "-c", script, str(spool), str(wb), mlflow_server.url, str(steps)],
                              capture_output=True, text=True, timeout=180)
        assert proc.returncode == 0, proc.stderr[-2000:]
        exported = ast.literal_eval(proc.stdout.strip().splitlines()[-1])  # {"wandb": n, "mlflow": n}
        assert exported["wandb"] >= 30 and exported["mlflow"] >= 30, exported  # the second one: all replayed
        if steps:
            for checkpoint in spool.glob("*/checkpoint.json"):
                checkpoint.unlink()  # lose the progress: everything is offered again
    rows = read_wandb(wb, "idem")["rows"]
    per_step = Counter(r["otel_rl/step"] for r in rows if "loss" in r)
    assert sorted(per_step) == list(range(30)) and set(per_step.values()) == {1}, per_step
    history = read_mlflow(mlflow_server.url, "idem", "idem")["scalars"]["loss"]
    assert history == {s: s / 4 for s in range(30)}  # no "duplicates" key: one row per step


def test_a_corrupt_record_does_not_hide_the_records_after_it_from_a_restart(tmp_path):
    """Found by a probe (a record of a helper's sink spool corrupted, then the helper killed):
    18-20 points were delivered twice in 2 of 8 runs. The reopened spool took the record before
    the corrupt one for its last, so the restarted helper numbered its frames from there and
    appended again the batches the spool already held after it. Its last is the real last."""
    spool = Spool(tmp_path / "s", fsync=False)
    for emission in range(5, 10):
        assert spool.append(Batch(_batch(emission).points, meta={"emission": emission}))
    spool._file.close()
    spool._lock_file.close()  # a SIGKILL
    (segment,) = (tmp_path / "s").glob("seg-*.log")
    data = bytearray(segment.read_bytes())
    data[len(data) // 5 + 20] ^= 0xFF  # a byte of the second record (five of one size)
    segment.write_bytes(bytes(data))
    again = Spool(tmp_path / "s")
    assert again.last_emission == 9
    assert [b.meta["emission"] for b in again] == [5, 7, 8, 9]  # 6 quarantined, the rest once
    assert again.quarantined_records == 1
