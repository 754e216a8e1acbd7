"""Media (images, videos, audio, figures) at their step in every backend, read back with each
backend's own reader: the same tags and steps in TensorBoard as tensorboardX writes, W&B's media
files, MLflow's images and artifacts, SwanLab's media records."""

from __future__ import annotations

import io
import subprocess
import sys
import time

import pytest
from backends import TensorBoardServer

pytest.importorskip("PIL")

#: CleanRL-shaped: its SummaryWriter calls, with frames, a batch, a figure, a video and audio.
SCRIPT = """
import sys
import numpy as np
import matplotlib
matplotlib.use("Agg")
import matplotlib.pyplot as plt
from {module} import SummaryWriter

writer = SummaryWriter(sys.argv[1])
rng = np.random.default_rng(0)
for global_step in range(0, 30, 10):
    writer.add_scalar("charts/episodic_return", global_step * 0.5, global_step)
    writer.add_image("env/frame", rng.random((3, 24, 32)), global_step)
    writer.add_image("env/frame_hwc", (rng.random((24, 32, 3)) * 255).astype(np.uint8), global_step,
                     dataformats="HWC")
    writer.add_images("env/batch", rng.random((5, 1, 8, 8)), global_step)
    fig = plt.figure(figsize=(2, 1), dpi=50)
    plt.plot([0, 1], [global_step, 0])
    writer.add_figure("charts/curve", fig, global_step)
    writer.add_video("env/episode", rng.random((1, 6, 3, 16, 16)), global_step, fps=5)
    writer.add_audio("env/sound", np.sin(np.arange(4000) / (3.0 + global_step)) * 0.5, global_step, sample_rate=8000)
writer.close()
"""


def _media(run_dir) -> dict:
    """{tag: [(step, kind, shape-ish)]} read with TensorBoard's own loader."""
    from PIL import Image
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(str(run_dir), size_guidance={"images": 0, "audio": 0})
    acc.Reload()
    out = {}
    for tag in acc.Tags()["images"]:
        for e in acc.Images(tag):
            picture = Image.open(io.BytesIO(e.encoded_image_string))
            out.setdefault(tag, []).append((e.step, picture.format, e.width, e.height,
                                            getattr(picture, "n_frames", 1)))
    for tag in acc.Tags()["audio"]:
        out[tag] = [(e.step, e.content_type, e.sample_rate, e.length_frames) for e in acc.Audio(tag)]
    return out


def test_a_cleanrl_shaped_script_with_the_import_switched_writes_what_tensorboardx_writes(tmp_path):
    pytest.importorskip("tensorboardX")
    pytest.importorskip("moviepy")  # tensorboardX's add_video and add_audio need these
    pytest.importorskip("soundfile")
    for module, folder in (("tensorboardX", "tbx"), ("otel_rl", "otel")):
        done = subprocess.run([sys.executable, "-c", SCRIPT.format(module=module), str(tmp_path / folder / "run")],
                              capture_output=True, text=True, timeout=300, cwd=tmp_path)
        assert done.returncode == 0, done.stderr[-3000:]
    ours, theirs = _media(tmp_path / "otel" / "run"), _media(tmp_path / "tbx" / "run")
    assert sorted(ours) == sorted(theirs) == ["charts/curve", "env/batch", "env/episode", "env/frame",
                                              "env/frame_hwc", "env/sound"]
    assert ours == theirs  # steps, PNG/GIF, sizes (the batch as a grid), GIF frames, audio rate and length
    assert ours["env/episode"][0][1:] == ("GIF", 16, 16, 6)

    server = TensorBoardServer(tmp_path / "otel").start()
    try:  # what a user sees: the image and audio dashboards of a real tensorboard, default flags
        deadline = time.monotonic() + 120
        while "env/sound" not in server.get("/data/plugin/audio/tags").get("run", {}):
            assert time.monotonic() < deadline, server.get("/data/plugin/audio/tags")
            time.sleep(1)
        images = server.get("/data/plugin/images/tags")["run"]
        assert {"env/frame", "env/frame_hwc", "env/batch", "charts/curve", "env/episode"} <= set(images)
        shown = server.get("/data/plugin/images/images", run="run", tag="env/episode", sample=0)
        assert [e["step"] for e in shown] == [0, 10, 20]
        blob = shown[0]["query"]
        with __import__("urllib.request").request.urlopen(f"{server.url}/data/plugin/images/individualImage?{blob}",
                                                          timeout=30) as r:
            assert r.read(6) == b"GIF89a"
        sounds = server.get("/data/plugin/audio/audio", run="run", tag="env/sound", sample=0)
        assert [e["step"] for e in sounds] == [0, 10, 20]
    finally:
        server.stop()


LOGGER_SCRIPT = """
import sys
import numpy as np
import matplotlib
matplotlib.use("Agg")
import matplotlib.pyplot as plt
import otel_rl

config = __import__("json").loads(sys.argv[1])
logger = otel_rl.Logger(config)
rng = np.random.default_rng(int(sys.argv[2]) if len(sys.argv) > 2 else 0)
for step in (0, 5):
    logger.log_metrics({"loss": 1.0 / (step + 1)}, step)
    logger.log_image("obs/frame", rng.random((16, 20, 3)), step, caption=f"step {step}")
    logger.log_video("rollout/video", rng.random((6, 3, 16, 16)), step, fps=5)
    logger.log_audio("speech/sample", np.sin(np.arange(2000) / 5.0) * 0.3, step, sample_rate=8000)
    fig = plt.figure(figsize=(2, 1), dpi=40)
    plt.plot([0, step])
    logger.log_plot(fig, step, "plots/curve")
logger.finish()
"""


def _run_logger(config: dict, *args: str) -> None:
    import json

    done = subprocess.run([sys.executable, "-c", LOGGER_SCRIPT, json.dumps(config), *args], capture_output=True,
                          text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]


def test_media_reaches_wandb_mlflow_and_swanlab_at_their_steps(tmp_path, mlflow_server):
    import glob

    from backends import _swanlab_experiments, backend_config, read_wandb
    from mlflow.tracking import MlflowClient

    config = {"run_name": "media", "tensorboard": backend_config("tensorboard", tmp_path),
              "wandb": backend_config("wandb", tmp_path), "swanlab": backend_config("swanlab", tmp_path),
              "mlflow": backend_config("mlflow", tmp_path, mlflow_server.url)}
    _run_logger(config)
    kinds = {"obs/frame": "image-file", "plots/curve": "image-file", "rollout/video": "video-file",
             "speech/sample": "audio-file"}

    # W&B (offline run file): each item in its row, at otel_rl/step, the file in the run's media/
    rows = read_wandb(tmp_path / "wb", "media")["rows"]  # (`wandb leet inspect` flattens an item's fields)
    (run_dir,) = glob.glob(str(tmp_path / "wb" / "wandb" / "offline-run-*"))
    for key, kind in kinds.items():
        items = [row for row in rows if f"{key}._type" in row]
        assert [row["otel_rl/step"] for row in items] == [0, 5], key
        assert all(row[f"{key}._type"] == kind for row in items), items
        assert all((tmp_path / run_dir / "files" / row[f"{key}.path"]).is_file() for row in items)
    frame = next(row for row in rows if "obs/frame._type" in row)
    assert (frame["obs/frame.width"], frame["obs/frame.height"], frame["obs/frame.caption"]) == (20, 16, "step 0")

    # MLflow (a real server): images through log_image at their steps; videos and audio as artifacts
    client = MlflowClient(tracking_uri=mlflow_server.url)
    exp = client.get_experiment_by_name(f"exp-{tmp_path.name}")
    (run,) = client.search_runs([exp.experiment_id], filter_string="tags.`otel_rl.run_id` = 'media'")
    images = [f.path for f in client.list_artifacts(run.info.run_id, "images") if f.path.endswith(".png")]
    assert sorted((p.split("+")[0], int(p.split("+step+")[1].split("+")[0])) for p in images) == [
        ("images/obs~frame", 0), ("images/obs~frame", 5), ("images/plots~curve", 0), ("images/plots~curve", 5)]
    for folder, suffix in (("media/rollout/video", ".gif"), ("media/speech/sample", ".wav")):
        files = sorted(f.path.rsplit("/", 1)[1] for f in client.list_artifacts(run.info.run_id, folder))
        assert [name.split("-")[1] for name in files] == ["0", "5"] and all(n.endswith(suffix) for n in files)

    # SwanLab (its own reader): a media record per item and step, the file beside it
    from swanlab.proto.swanlab.record.v1.record_pb2 import Record
    from swanlab.sdk.internal.core_python.store import DataStoreReader

    ((run_dir, name, _),) = list(_swanlab_experiments(tmp_path / "sl"))
    assert name == "media"
    reader, media = DataStoreReader(), {}
    reader.open(glob.glob(f"{run_dir}/*.swanlab")[0])
    try:
        while (raw := reader.scan()) is not None:
            record = Record()
            record.ParseFromString(raw)
            if record.HasField("media"):
                for item in record.media.value.items:
                    media.setdefault(record.media.key, []).append((int(record.media.step), item.filename))
    finally:
        reader.close()
    assert sorted(media) == sorted(kinds)
    for key, items in media.items():
        assert [step for step, _ in items] == [0, 5], key
        assert all(glob.glob(f"{run_dir}/media/*/{filename}") for _, filename in items)


@pytest.mark.parametrize("protocol", ["http/protobuf", "grpc"])
def test_two_ranks_send_media_through_the_collector_and_every_ranks_item_is_kept(tmp_path, protocol):
    """Over OTLP logs (a bytes body), HTTP and gRPC: media is not reduced across ranks; each
    rank's item is in TensorBoard at its step, told apart by a ``rank`` attribute."""
    import os

    from conftest import read_tensorboard

    from otel_rl_collector import create

    collector = create({"receivers": {"http": {"port": 0}, "grpc": {"port": 0}}, "reduce": {"timeout_s": 30},
                        "tensorboard": {"log_dir": str(tmp_path / "tb")}}).start()
    port = collector.grpc_port if protocol == "grpc" else collector.http_port
    config = {"run_name": "ranked", "tensorboard": {"enabled": False}, "export_interval_s": 0.2,
              "otlp": {"enabled": True, "protocol": protocol, "endpoint": f"http://127.0.0.1:{port}"}}
    import json

    procs = [subprocess.Popen([sys.executable, "-c", LOGGER_SCRIPT, json.dumps(config), str(rank)],
                              env={**os.environ, "RANK": str(rank), "WORLD_SIZE": "2"}, stderr=subprocess.PIPE)
             for rank in range(2)]
    try:
        for p in procs:
            _, err = p.communicate(timeout=180)
            assert p.returncode == 0, err.decode()[-3000:]
    finally:
        collector.shutdown()
    media = _media(tmp_path / "tb" / "ranked")
    for key in ("obs/frame", "rollout/video", "speech/sample", "plots/curve"):
        for rank in range(2):
            tag = next(t for t in media if t.startswith(key) and t.endswith(f"rank:{rank}"))
            assert [item[0] for item in media[tag]] == [0, 5], (tag, media[tag])
    assert sum(1 for t in media if t.startswith("obs/frame")) == 2
    frame = next(v for t, v in media.items() if t.startswith("obs/frame"))
    assert frame[0][1:4] == ("PNG", 20, 16)
    loss = read_tensorboard(tmp_path / "tb" / "ranked")["scalars"]["loss"]  # scalars: reduced as usual
    assert loss == {0: 1.0, 5: pytest.approx(1 / 6, rel=1e-6)}


KILL_TRAINER = """
import sys, numpy as np, otel_rl
spool, log_dir, first, count = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
pipeline = otel_rl.init({"run_name": "kills", "export_interval_s": 0.02, "spool_dir": spool,
                         "tensorboard": {"log_dir": log_dir}})
print("ready", flush=True)
for step in range(first, first + count):
    otel_rl.set_step(step)
    frame = np.full((8, 8, 3), step % 251, dtype=np.uint8)  # the step is in the pixels
    otel_rl.log_image("env/frame", frame, step)
    if step % 5 == 4:
        pipeline.force_flush()
        print(step, flush=True)  # every frame up to here is delivered: acknowledged
otel_rl.shutdown()
"""


def test_a_trainer_sigkilled_while_sending_media_restarts_on_its_spool_and_each_item_is_there_once(tmp_path):
    import random

    from conftest import sigkill_at_random
    from PIL import Image
    from tensorboard.backend.event_processing.event_file_loader import LegacyEventFileLoader

    rng = random.Random(7)
    spool, log_dir = tmp_path / "spool", tmp_path / "tb"
    acknowledged: set[int] = set()
    for attempt in range(5):
        first = attempt * 1000
        acknowledged |= sigkill_at_random([sys.executable, "-c", KILL_TRAINER, str(spool), str(log_dir), str(first),
                                           "400"], rng, first, window=(0.2, 1.5))
    final = subprocess.run([sys.executable, "-c", KILL_TRAINER, str(spool), str(log_dir), "99000", "5"],
                           capture_output=True, text=True, timeout=180)
    assert final.returncode == 0, final.stderr[-2000:]
    seen: dict[int, int] = {}
    for path in sorted((log_dir / "kills").rglob("events.out.tfevents.*")):
        for event in LegacyEventFileLoader(str(path)).Load():
            for value in event.summary.value:
                if value.tag == "env/frame":
                    pixel = Image.open(io.BytesIO(value.image.encoded_image_string)).getpixel((0, 0))[0]
                    assert pixel == event.step % 251  # the image of that step, not another's
                    seen[event.step] = seen.get(event.step, 0) + 1
    assert len(acknowledged) > 50, len(acknowledged)
    assert sorted(acknowledged - set(seen)) == []
    assert sorted(s for s, n in seen.items() if n > 1) == []


def test_a_burst_of_a_thousand_frames_keeps_the_trainers_memory_bounded(tmp_path):
    """1,000 float frames of 64x64 logged back to back (49 MB as float32): the trainer's RSS grows
    by less than 50 MB (frames are kept as uint8 until the helper encodes them)."""
    script = """
import sys, numpy as np, psutil, otel_rl
pipeline = otel_rl.init({"run_name": "burst", "tensorboard": {"log_dir": sys.argv[1]}})
frames = np.random.default_rng(0).random((16, 3, 64, 64), dtype=np.float32)
for i in range(10):
    otel_rl.log_image("warmup", frames[i], i, dataformats="CHW")
pipeline.force_flush()
base = psutil.Process().memory_info().rss
peak = base
for i in range(1000):
    otel_rl.log_image("env/frame", frames[i % 16], i, dataformats="CHW")
    if i % 50 == 0:
        peak = max(peak, psutil.Process().memory_info().rss)
pipeline.force_flush()
peak = max(peak, psutil.Process().memory_info().rss)
otel_rl.shutdown()
print((peak - base) / 2**20)
"""
    done = subprocess.run([sys.executable, "-c", script, str(tmp_path / "tb")], capture_output=True, text=True,
                          timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    grown_mb = float(done.stdout.strip().splitlines()[-1])
    assert grown_mb < 50, grown_mb
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(str(tmp_path / "tb" / "burst"), size_guidance={"images": 0})
    acc.Reload()
    assert [e.step for e in acc.Images("env/frame")] == list(range(1000))


def test_the_capture_video_example_logs_each_recorded_episode_at_the_step_it_ended(tmp_path):
    """CleanRL's --capture_video path: gymnasium's RecordVideo writes MP4s; the example logs each
    at the step its episode ended. TensorBoard gets it as an animated GIF, W&B the MP4 itself."""
    import yaml

    pytest.importorskip("moviepy")  # RecordVideo writes MP4 with it
    pytest.importorskip("imageio_ffmpeg")
    from backends import read_wandb
    from conftest import read_tensorboard

    config = tmp_path / "otel-rl.yaml"
    config.write_text(yaml.safe_dump({"wandb": {"enabled": True, "mode": "offline", "dir": str(tmp_path / "wb"),
                                                "project": "t"}}))
    done = subprocess.run([sys.executable, "examples/capture_video.py", "--steps", "600", "--runs",
                           str(tmp_path / "runs"), "--config", str(config)], capture_output=True, text=True,
                          timeout=300, cwd=__import__("pathlib").Path(__file__).resolve().parents[1])
    assert done.returncode == 0, done.stderr[-3000:]
    assert "3 videos logged" in done.stdout
    ends = sorted(read_tensorboard(tmp_path / "runs" / "capture-video")["scalars"]["charts/episodic_return"])
    videos = _media(tmp_path / "runs" / "capture-video")["videos/episode"]
    assert [v[0] for v in videos] == [ends[0], ends[5], ends[10]]  # episodes 0, 5 and 10, where they ended
    assert all(v[1:4] == ("GIF", 64, 64) and v[4] > 5 for v in videos)  # animated
    rows = read_wandb(tmp_path / "wb", "capture-video")["rows"]
    items = [row for row in rows if "videos/episode._type" in row]
    assert [row["otel_rl/step"] for row in items] == [v[0] for v in videos]
    assert all(row["videos/episode.path"].endswith(".mp4") for row in items)


def test_bad_media_is_a_clear_error_at_the_call_and_an_item_over_the_limit_is_refused_and_counted(
        tmp_path, monkeypatch, caplog):
    import numpy as np

    import otel_rl
    from otel_rl.api import media

    pipeline = otel_rl.init({"run_name": "limits", "tensorboard": {"log_dir": str(tmp_path / "tb")}})
    try:
        with pytest.raises(ValueError, match="dataformats 'CHW' does not describe"):
            otel_rl.log_image("bad", np.zeros((4, 4)), 0, dataformats="CHW")
        with pytest.raises(ValueError, match="non-empty numeric array"):
            otel_rl.log_image("bad", np.array(["a"]), 0)
        with pytest.raises(ValueError, match=r"must end in one of \.gif, \.mp4"):
            otel_rl.log_video("bad", str(tmp_path / "x.avi"), 0)
        monkeypatch.setattr(media, "MAX_ITEM_BYTES", 1000)
        for step in range(3):
            otel_rl.log_image("big", np.zeros((32, 32, 3), np.uint8), step)
        otel_rl.log_image("small", np.zeros((8, 8, 3), np.uint8), 0)
        assert pipeline.stats()["refused_media"] == 3
        assert caplog.text.count("over the 0 MiB limit") == 1  # once per tag
        monkeypatch.setattr(media, "MAX_STEP_BYTES", 1000)  # 192 bytes each: five fit in one step
        for step in (1, 2):
            for i in range(8):
                otel_rl.log_image(f"env/{i}", np.zeros((8, 8, 3), np.uint8), step)
        assert pipeline.stats()["refused_media"] == 3 + 3 + 3
        assert "would pass the 0 MiB of media one step takes" in caplog.text
    finally:
        otel_rl.shutdown()
    shown = _media(tmp_path / "tb" / "limits")
    assert sorted(shown) == ["env/0", "env/1", "env/2", "env/3", "env/4", "small"]
    assert all([e[0] for e in shown[f"env/{i}"]] == [1, 2] for i in range(5))


def test_the_collector_refuses_a_media_item_over_its_limit_and_keeps_the_rest(tmp_path):
    import urllib.request

    from opentelemetry.proto.collector.logs.v1 import logs_service_pb2 as lpb

    from otel_rl.model.media import Media
    from otel_rl.model.records import Point
    from otel_rl.sinks.otlp_encode import encode_logs_request
    from otel_rl_collector import create

    collector = create({"receivers": {"http": {"port": 0}, "grpc": {"enabled": False}},
                        "limits": {"max_media_bytes": 10_000}, "tensorboard": {"log_dir": str(tmp_path / "tb")}}).start()
    try:
        small, big = _png(8), _png(200)
        assert len(small) < 10_000 < len(big)
        points = [Point("m", "small", 1, Media("image", "png", small, 8, 8, 3), 1.0, "media"),
                  Point("m", "big", 1, Media("image", "png", big, 200, 200, 3), 1.0, "media")]
        body = encode_logs_request(points, {"otel_rl.run.id": "m"}, "b1", "s1").SerializeToString()
        request = urllib.request.Request(f"http://127.0.0.1:{collector.http_port}/v1/logs", data=body,
                                         headers={"Content-Type": "application/x-protobuf"})
        with urllib.request.urlopen(request, timeout=30) as r:
            answer = lpb.ExportLogsServiceResponse.FromString(r.read())
        assert answer.partial_success.rejected_log_records == 1
        message = answer.partial_success.error_message
        assert "'big'" in message and "max_media_bytes=10000" in message
    finally:
        collector.shutdown()
    assert sorted(_media(tmp_path / "tb" / "m")) == ["small"]


def _png(size: int) -> bytes:
    import numpy as np
    from PIL import Image

    out = io.BytesIO()
    Image.fromarray(np.random.default_rng(size).integers(0, 256, (size, size, 3), dtype=np.uint8)).save(out, "PNG")
    return out.getvalue()


def test_an_image_replayed_to_mlflow_after_a_restart_is_stored_once(tmp_path, mlflow_server):
    """MLflow names each logged image with a new uuid: a batch replayed from a spool after a
    crash would store its images twice. The sink finds what the run holds and skips it."""
    import numpy as np
    from mlflow.tracking import MlflowClient

    from otel_rl.model.media import encode, snapshot
    from otel_rl.model.records import Batch, Point
    from otel_rl.sinks.mlflow import MlflowConfig, MlflowExporter

    image = encode(snapshot("image", np.zeros((8, 8, 3), np.uint8), dataformats="HWC"))
    batch = Batch([Point("replay", "obs/frame", 3, image, 1_700_000_000.25, "media")])
    config = MlflowConfig(enabled=True, tracking_uri=mlflow_server.url, experiment="media-replay")
    first = MlflowExporter(config)
    first.instance = "spool-1"
    first.write(batch)
    restarted = MlflowExporter(config)  # the same spool: the same MLflow run
    restarted.instance = "spool-1"
    restarted.write(batch)  # the replay
    restarted.write(Batch([Point("replay", "obs/frame", 4, image, 1_700_000_001.0, "media")]))  # a new one
    client = MlflowClient(tracking_uri=mlflow_server.url)
    exp = client.get_experiment_by_name("media-replay")
    (run,) = client.search_runs([exp.experiment_id])
    pngs = [f.path for f in client.list_artifacts(run.info.run_id, "images") if f.path.endswith(".png")]
    assert sorted(p.split("+timestamp+")[0] for p in pngs) == ["images/obs~frame+step+3", "images/obs~frame+step+4"]


def test_images_while_tensorboards_disk_fills_up_and_frees_are_each_there_once(tmp_path, small_disk):
    """TensorBoard's disk (a 2 MiB tmpfs) fills up while images are logged, records torn half-way:
    the batch is rolled back and retried, the spool (on another disk) holds what waits; once the
    space is freed, every image is in the event file once, and it is the image of its step."""
    import numpy as np
    from PIL import Image
    from tensorboard.backend.event_processing.event_file_loader import LegacyEventFileLoader

    import otel_rl

    filler = small_disk / "filler"
    filler.write_bytes(b"\0" * (2 * 2**20 - 160 * 1024))  # about 160 KiB left: a dozen images
    logger = otel_rl.Logger({"run_name": "media-disk", "export_interval_s": 0.05, "spool_dir": str(tmp_path / "spool"),
                             "system_metrics": {"enabled": False},
                             "tensorboard": {"log_dir": str(small_disk / "tb")}})
    rng = np.random.default_rng(3)
    for step in range(60):
        pixels = (rng.random((48, 48, 3)) * 255).astype(np.uint8)  # noise: about 7 KB as PNG
        pixels[0, 0, 0] = step
        logger.log_image("env/frame", pixels, step)
        logger.log_metrics({"loss": 1.0 / (step + 1)}, step)
    deadline = time.monotonic() + 60
    while logger.pipeline.stats()["tensorboard"]["failed_attempts"] == 0 and time.monotonic() < deadline:
        time.sleep(0.1)
    assert logger.pipeline.stats()["tensorboard"]["failed_attempts"] > 0  # the disk really was full
    filler.unlink()
    logger.finish(timeout_s=60)
    stats = logger.pipeline.stats()["tensorboard"]
    assert stats["dropped_points"] == 0 and stats["quarantined_points"] == 0
    seen: dict[int, int] = {}
    losses: dict[int, int] = {}
    for path in sorted((small_disk / "tb" / "media-disk").rglob("events.out.tfevents.*")):
        for event in LegacyEventFileLoader(str(path)).Load():
            for value in event.summary.value:
                if value.tag == "env/frame":
                    assert Image.open(io.BytesIO(value.image.encoded_image_string)).getpixel((0, 0))[0] == event.step
                    seen[event.step] = seen.get(event.step, 0) + 1
                elif value.tag == "loss":
                    losses[event.step] = losses.get(event.step, 0) + 1
    assert seen == dict.fromkeys(range(60), 1)
    assert losses == dict.fromkeys(range(60), 1)
