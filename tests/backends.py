"""Real backends for tests: build each exporter into a temp dir / a real server, and read
its storage back with the backend's own reader. No mocks."""

from __future__ import annotations

import glob
import json
import math
import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

from conftest import read_hparams, read_tensorboard, read_tensorboard_tables

BACKENDS = ("tensorboard", "wandb", "swanlab", "mlflow")


def stop_process(proc: subprocess.Popen | None) -> None:
    """End a process this test started (by its handle): terminate, then kill after 20 s."""
    if proc is not None and proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def wait_until_up(proc: subprocess.Popen, url: str, log: Path, what: str, timeout_s: float) -> None:
    """Poll ``url`` until it answers; a server that exits (its log's tail in the error) or stays
    down past ``timeout_s`` is stopped and raises."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"{what} exited: {log.read_text()[-2000:]}")
        try:
            urllib.request.urlopen(url, timeout=1)
            return
        except OSError:
            time.sleep(0.3)
    stop_process(proc)
    raise RuntimeError(f"{what} did not come up")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class MlflowServer:
    """A real `mlflow server` on 127.0.0.1 with a sqlite store; stopped by pid."""

    def __init__(self, root: Path, port: int | None = None) -> None:
        self.root = root
        self.port = port or free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.proc: subprocess.Popen | None = None

    def start(self, timeout_s: float = 90.0) -> MlflowServer:
        env = dict(os.environ, MLFLOW_SERVER_ENABLE_JOB_EXECUTION="false")
        mlflow_bin = str(Path(sys.executable).parent / "mlflow")
        self.proc = subprocess.Popen(
            [mlflow_bin, "server", "--backend-store-uri", f"sqlite:///{self.root}/mlflow.db",
             "--default-artifact-root", str(self.root / "artifacts"), "--host", "127.0.0.1",
             "--port", str(self.port), "--workers", "1"],
            stdout=open(self.root / "server.log", "ab"), stderr=subprocess.STDOUT, env=env)
        wait_until_up(self.proc, self.url + "/health", self.root / "server.log", "mlflow server", timeout_s)
        return self

    def stop(self) -> None:
        stop_process(self.proc)
        self.proc = None


class PrometheusServer:
    """A real Prometheus server (Debian package) on 127.0.0.1 scraping ``targets`` every second;
    stopped by pid."""

    def __init__(self, root: Path, targets: list[str]) -> None:
        self.root = root
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        (root / "prometheus.yml").write_text(
            "global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\n"
            "scrape_configs:\n  - job_name: otel-rl\n    static_configs:\n"
            f"      - targets: {json.dumps(targets)}\n")
        self.proc: subprocess.Popen | None = None

    def start(self, timeout_s: float = 60.0) -> PrometheusServer:
        binary = shutil.which("prometheus")
        if binary is None:
            raise RuntimeError("prometheus is not installed (apt-get install prometheus; .ci/run does)")
        self.proc = subprocess.Popen(
            [binary, f"--config.file={self.root / 'prometheus.yml'}",
             f"--storage.tsdb.path={self.root / 'data'}", f"--web.listen-address=127.0.0.1:{self.port}"],
            stdout=open(self.root / "prometheus.log", "ab"), stderr=subprocess.STDOUT)
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            try:
                urllib.request.urlopen(self.url + "/-/ready", timeout=1)
                return self
            except OSError:
                time.sleep(0.3)
        self.stop()
        raise RuntimeError("prometheus did not become ready")

    def query(self, promql: str) -> list[dict]:
        from urllib.parse import urlencode

        with urllib.request.urlopen(f"{self.url}/api/v1/query?{urlencode({'query': promql})}", timeout=5) as r:
            body = json.loads(r.read())
        assert body["status"] == "success", body
        return body["data"]["result"]

    def wait_for(self, promql: str, predicate, timeout_s: float = 45.0) -> list[dict]:
        """Poll ``promql`` until ``predicate(result)`` holds; return the result."""
        deadline = time.monotonic() + timeout_s
        result: list[dict] = []
        while time.monotonic() < deadline:
            result = self.query(promql)
            if predicate(result):
                return result
            time.sleep(0.5)
        raise AssertionError(f"{promql}: condition not met in {timeout_s}s; last result {result}")

    def stop(self) -> None:
        stop_process(self.proc)
        self.proc = None


class OtlpHttpReceiver:
    """A minimal OTLP/HTTP receiver on 127.0.0.1 decoding the real protobuf requests, so tests
    can see exactly what the upstream OTel exporters put on the wire."""

    def __init__(self) -> None:
        import gzip
        import threading
        from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

        from opentelemetry.proto.collector.metrics.v1 import metrics_service_pb2 as mpb
        from opentelemetry.proto.collector.trace.v1 import trace_service_pb2 as tpb

        kinds = {"/v1/metrics": (mpb.ExportMetricsServiceRequest, mpb.ExportMetricsServiceResponse),
                 "/v1/traces": (tpb.ExportTraceServiceRequest, tpb.ExportTraceServiceResponse)}
        self.requests: list[tuple[str, object]] = []
        requests = self.requests

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):  # noqa: N802
                body = self.rfile.read(int(self.headers["Content-Length"]))
                if self.headers.get("Content-Encoding") == "gzip":
                    body = gzip.decompress(body)
                request_cls, response_cls = kinds[self.path]
                requests.append((self.path, request_cls.FromString(body)))
                out = response_cls().SerializeToString()
                self.send_response(200)
                self.send_header("Content-Type", "application/x-protobuf")
                self.send_header("Content-Length", str(len(out)))
                self.end_headers()
                self.wfile.write(out)

            def log_message(self, *args):
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self._server.server_address[1]}"
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)
        self._thread.start()

    def spans(self) -> list:
        return [span for path, req in self.requests if path == "/v1/traces"
                for rs in req.resource_spans for ss in rs.scope_spans for span in ss.spans]

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()


def backend_config(name: str, tmp: Path, mlflow_url: str | None = None) -> dict:
    """The config section that points backend ``name`` at ``tmp`` (or the MLflow server)."""
    return {
        "tensorboard": {"enabled": True, "log_dir": str(tmp / "tb")},
        "wandb": {"enabled": True, "mode": "offline", "dir": str(tmp / "wb"), "project": "test"},
        "swanlab": {"enabled": True, "mode": "offline", "logdir": str(tmp / "sl"), "project": "test"},
        "mlflow": {"enabled": True, "tracking_uri": mlflow_url or f"sqlite:///{tmp}/mlflow.db",
                   "experiment": f"exp-{tmp.name}"},
    }[name]


# -- readers: {key: {step: value}} from each backend's own storage ----------------------------

def read_scalars(name: str, tmp: Path, run: str, mlflow_url: str | None = None) -> dict:
    return {"tensorboard": lambda: read_tensorboard(tmp / "tb" / run)["scalars"],
            "wandb": lambda: read_wandb(tmp / "wb", run)["scalars"],
            "swanlab": lambda: read_swanlab(tmp / "sl", run)["scalars"],
            "mlflow": lambda: read_mlflow(mlflow_url or f"sqlite:///{tmp}/mlflow.db",
                                          f"exp-{tmp.name}", run)["scalars"]}[name]()


def read_params(name: str, tmp: Path, run: str, mlflow_url: str | None = None) -> dict:
    return {"tensorboard": lambda: read_hparams(tmp / "tb" / run),
            "wandb": lambda: read_wandb(tmp / "wb", run)["config"],
            "swanlab": lambda: read_swanlab(tmp / "sl", run)["config"],
            "mlflow": lambda: read_mlflow(mlflow_url or f"sqlite:///{tmp}/mlflow.db",
                                          f"exp-{tmp.name}", run)["params"]}[name]()


# `leet inspect --json` writes non-finite floats as strings (JSON has no NaN).
_JSON_SPECIAL = {"NaN": math.nan, "Infinity": math.inf, "-Infinity": -math.inf}


def _wandb_records(run_dir: str) -> list[dict]:
    wandb_bin = shutil.which("wandb", path=str(Path(sys.executable).parent)) or "wandb"
    out = subprocess.run([wandb_bin, "leet", "inspect", run_dir, "--json"], capture_output=True,
                         text=True, timeout=120)
    if out.returncode != 0:
        raise RuntimeError(f"wandb leet inspect {run_dir} failed ({out.returncode}): {out.stderr[-2000:]}")
    return [json.loads(line) for line in out.stdout.splitlines() if line.startswith("{")]


def read_wandb(wandb_dir: Path, run: str) -> dict:
    """History rows and config of the offline run named ``run`` (every offline directory of it:
    a resumed run has one per process), via `wandb leet inspect --json`."""
    scalars, config, rows, found = {}, {}, [], False
    for run_dir in sorted(glob.glob(str(wandb_dir / "wandb" / "offline-run-*"))):
        if not glob.glob(os.path.join(run_dir, "run-*.wandb")):
            continue  # a process killed before W&B created its run file
        records = _wandb_records(run_dir)
        header = next((r for r in records if r["type"] == "run"), None)
        if header is None or header["run"].get("display_name") != run:  # None: killed before its header
            continue
        found = True
        for r in records:
            if r["type"] == "history":
                item = r["history"]["item"]
                rows.append(item)
                step = item.get("otel_rl/step")
                for key, value in item.items():
                    if not key.startswith("_") and key != "otel_rl/step":
                        special = _JSON_SPECIAL.get(value) if isinstance(value, str) else None
                        scalars.setdefault(key, {})[step] = value if special is None else special
            elif r["type"] in ("run", "config"):
                update = (r[r["type"]].get("config") or r[r["type"]]).get("update", {})
                config.update({k: v for k, v in update.items() if k != "_wandb"})
    if not found:
        raise FileNotFoundError(f"no offline W&B run named {run!r} under {wandb_dir}")
    return {"scalars": scalars, "config": config, "rows": rows}


def _swanlab_experiments(logdir: Path):
    """``(run_dir, experiment name, [(key, step, value), ...])`` per SwanLab run directory,
    every scalar record included, read with SwanLab's DataStoreReader and its Record proto."""
    from swanlab.proto.swanlab.record.v1.record_pb2 import Record
    from swanlab.sdk.internal.core_python.store import DataStoreReader

    for run_dir in sorted(glob.glob(str(logdir / "run-*"))):
        reader = DataStoreReader()
        reader.open(glob.glob(os.path.join(run_dir, "*.swanlab"))[0])
        name, scalars = None, []
        try:
            while (raw := reader.scan()) is not None:
                rec = Record()
                rec.ParseFromString(raw)
                if rec.HasField("start"):
                    name = rec.start.name
                elif rec.HasField("scalar"):
                    s = rec.scalar
                    scalars.append((s.key, int(s.step), float(s.value.number)))
        finally:
            reader.close()
        yield run_dir, name, scalars


def read_swanlab(logdir: Path, run: str) -> dict:
    """Scalars (the first value per step, as SwanLab shows it) and config of experiment ``run``
    (every folder of it: a run resumed after another one has one folder per resume, same id)."""
    import yaml
    from swanlab.sdk.internal.run.components.config.helper import revert_config

    scalars: dict = {}
    config: dict = {}
    found = False
    for run_dir, name, records in _swanlab_experiments(logdir):
        if name != run:
            continue
        found = True
        for key, step, value in records:
            scalars.setdefault(key, {}).setdefault(step, value)
        cfg_file = Path(run_dir) / "files" / "config.yaml"
        if cfg_file.is_file():
            config.update(revert_config(yaml.safe_load(cfg_file.read_text()) or {}))
    if not found:
        raise FileNotFoundError(f"no SwanLab experiment named {run!r} under {logdir}")
    return {"scalars": scalars, "config": dict(config)}


def read_mlflow(tracking_uri: str, experiment: str, run: str) -> dict:
    """Every metric's full history (get_metric_history) and the params of run ``run``."""
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=tracking_uri)
    exp = client.get_experiment_by_name(experiment)
    (found,) = client.search_runs([exp.experiment_id], filter_string=f"tags.`otel_rl.run_id` = '{run}'")
    scalars = {}
    for key in found.data.metrics:
        history = client.get_metric_history(found.info.run_id, key)
        scalars[key] = {m.step: m.value for m in history}
        if len(history) != len(scalars[key]):
            scalars[key]["duplicates"] = len(history) - len(scalars[key])
    return {"scalars": scalars, "params": dict(found.data.params), "run_id": found.info.run_id,
            "status": found.info.status}


def read_counts(name: str, tmp: Path, run: str, mlflow_url: str | None = None) -> dict:
    """How many times each (key, step) is stored, from the backend's own storage:
    ``{key: {step: count}}`` (an exactly-once check needs every count to be 1)."""
    from collections import Counter

    from conftest import read_tensorboard_events

    counts: dict[str, Counter] = {}
    if name == "tensorboard":
        for tag, events in read_tensorboard_events(tmp / "tb" / run).items():
            counts[tag] = Counter(step for step, _ in events)
    elif name == "wandb":
        for row in read_wandb(tmp / "wb", run)["rows"]:
            for key in row:
                if not key.startswith("_") and key != "otel_rl/step":
                    counts.setdefault(key, Counter())[row.get("otel_rl/step")] += 1
    elif name == "swanlab":
        for _, found, records in _swanlab_experiments(tmp / "sl"):
            if found == run:
                for key, step, _ in records:
                    counts.setdefault(key, Counter())[step] += 1
    else:
        from mlflow.tracking import MlflowClient

        client = MlflowClient(tracking_uri=mlflow_url or f"sqlite:///{tmp}/mlflow.db")
        exp = client.get_experiment_by_name(f"exp-{tmp.name}")
        (found,) = client.search_runs([exp.experiment_id], filter_string=f"tags.`otel_rl.run_id` = '{run}'")
        for key in found.data.metrics:
            counts[key] = Counter(m.step for m in client.get_metric_history(found.info.run_id, key))
    return {key: dict(c) for key, c in counts.items()}


class TensorBoardServer:
    """A real ``tensorboard`` server with its default flags (the fast Rust loader, which drops
    steps written out of order) on 127.0.0.1, queried over its HTTP API as the UI does."""

    def __init__(self, logdir: Path) -> None:
        self.logdir = logdir
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.proc: subprocess.Popen | None = None

    def start(self, timeout_s: float = 120.0) -> TensorBoardServer:
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "tensorboard.main", "--logdir", str(self.logdir), "--host", "127.0.0.1",
             "--port", str(self.port)], stdout=subprocess.DEVNULL, stderr=open(self.logdir.parent / "tb-server.log", "ab"))
        wait_until_up(self.proc, self.url + "/data/runs", self.logdir.parent / "tb-server.log", "tensorboard", timeout_s)
        return self

    def get(self, path: str, **query):
        from urllib.parse import urlencode

        with urllib.request.urlopen(f"{self.url}{path}?{urlencode(query)}", timeout=30) as r:
            return json.loads(r.read())

    def post(self, path: str, body: dict):
        request = urllib.request.Request(f"{self.url}{path}", data=json.dumps(body).encode(),
                                         headers={"Content-Type": "application/json"}, method="POST")
        with urllib.request.urlopen(request, timeout=30) as r:
            return json.loads(r.read())

    def wait_loaded(self, runs: list[str], tags: list[str], timeout_s: float = 120.0) -> dict:
        """The scalar tags per run once every run in ``runs`` lists every tag in ``tags``."""
        deadline = time.monotonic() + timeout_s
        while True:
            found = self.get("/data/plugin/scalars/tags")
            if all(r in found and all(t in found[r] for t in tags) for r in runs):
                time.sleep(6)  # the loader reloads every 5 s: let it finish reading the files
                return self.get("/data/plugin/scalars/tags")
            if time.monotonic() > deadline:
                raise AssertionError(f"tensorboard never listed {runs} x {tags}: {found}")
            time.sleep(1)

    def scalars(self, run: str, tag: str) -> list[tuple[float, int, float]]:
        """``[(wall_time, step, value)]`` as the scalars dashboard gets them."""
        return [tuple(x) for x in self.get("/data/plugin/scalars/scalars", run=run, tag=tag)]

    def histograms(self, run: str, tag: str) -> list:
        """``[(wall_time, step, [[left, right, count], ...])]`` as the histograms dashboard gets them."""
        return [tuple(x) for x in self.get("/data/plugin/histograms/histograms", run=run, tag=tag)]

    def stop(self) -> None:
        stop_process(self.proc)
        self.proc = None


def make_certificates(directory: Path) -> tuple[Path, Path, Path]:
    """``(ca.crt, tls.crt, tls.key)`` in ``directory``: a CA and a server certificate for
    127.0.0.1/localhost signed by it (what cert-manager or an operator's PKI puts into a Secret)."""
    import datetime
    import ipaddress

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    now = datetime.datetime.now(datetime.timezone.utc)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "otel-rl test CA")])
    ca = (x509.CertificateBuilder().subject_name(ca_name).issuer_name(ca_name)
          .public_key(ca_key.public_key()).serial_number(x509.random_serial_number())
          .not_valid_before(now - datetime.timedelta(minutes=5)).not_valid_after(now + datetime.timedelta(days=1))
          .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
          .add_extension(x509.KeyUsage(digital_signature=True, content_commitment=False, key_encipherment=False,
                                       data_encipherment=False, key_agreement=False, key_cert_sign=True,
                                       crl_sign=True, encipher_only=False, decipher_only=False), critical=True)
          .sign(ca_key, hashes.SHA256()))
    key = ec.generate_private_key(ec.SECP256R1())
    cert = (x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "rl-otel-rl")]))
            .issuer_name(ca_name).public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5)).not_valid_after(now + datetime.timedelta(days=1))
            .add_extension(x509.SubjectAlternativeName([x509.DNSName("localhost"),
                                                        x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
                           critical=False)
            .add_extension(x509.ExtendedKeyUsage([x509.oid.ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
            .sign(ca_key, hashes.SHA256()))
    pem = serialization.Encoding.PEM
    paths = directory / "ca.crt", directory / "tls.crt", directory / "tls.key"
    paths[0].write_bytes(ca.public_bytes(pem))
    paths[1].write_bytes(cert.public_bytes(pem))
    paths[2].write_bytes(key.private_bytes(pem, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()))
    return paths


# -- samples tables, from each backend's own storage ------------------------------------------

def read_tb_tables(run_dir: Path, tag: str) -> dict[int, str]:
    """{step: table text} of a single-rank run: the one table per step of a single-rank run (conftest's reader, late sub-runs included)."""
    tables = read_tensorboard_tables(run_dir, tag)
    assert all(len(texts) == 1 for texts in tables.values()), f"a step written twice: {tables}"
    return {step: texts[0] for step, texts in tables.items()}


def read_wandb_tables(wandb_dir: Path, run: str, key: str) -> dict[int, list[dict]]:
    """{step: rows} of the W&B Table ``key`` in the offline run named ``run``."""
    out = {}
    for run_dir in sorted(glob.glob(str(wandb_dir / "wandb" / "offline-run-*"))):
        records = _wandb_records(run_dir)
        header = next((r for r in records if r["type"] == "run"), None)
        if header is None or header["run"].get("display_name") != run:
            continue
        assert not [r for r in records if r["type"] == "stats"], "W&B's own system metrics are on"
        for r in records:
            # `leet inspect` flattens the table's reference: "<key>._type", "<key>.path"
            if r["type"] != "history" or f"{key}._type" not in r["history"]["item"]:
                continue
            item = r["history"]["item"]
            assert item[f"{key}._type"] == "table-file", item
            doc = json.loads(Path(run_dir, "files", item[f"{key}.path"]).read_text())
            step = item["otel_rl/step"]
            assert step not in out
            out[step] = [dict(zip(doc["columns"], row)) for row in doc["data"]]
    return out


def read_swanlab_texts(logdir: Path, run: str, key: str) -> dict[int, list[str]]:
    """{step: texts} of SwanLab's Text media ``key``, read with its own record reader."""
    from swanlab.proto.swanlab.record.v1.record_pb2 import Record
    from swanlab.sdk.internal.core_python.store import DataStoreReader

    for run_dir, name, _ in _swanlab_experiments(logdir):
        if name != run:
            continue
        reader = DataStoreReader()
        reader.open(glob.glob(os.path.join(run_dir, "*.swanlab"))[0])
        out: dict[int, list[str]] = {}
        try:
            while (raw := reader.scan()) is not None:
                rec = Record()
                rec.ParseFromString(raw)
                if rec.HasField("media") and rec.media.key == key:
                    assert rec.media.step not in out
                    out[rec.media.step] = [Path(run_dir, "media", "text", item.filename).read_text()
                                           for item in rec.media.value.items]
        finally:
            reader.close()
        return out
    raise FileNotFoundError(run)


def read_mlflow_table(url: str, experiment: str, run: str, path: str) -> list[dict]:
    """The rows of an MLflow table artifact (``mlflow.load_table``) of the run tagged ``run``."""
    import mlflow
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=url)
    exp = client.get_experiment_by_name(experiment)
    (found,) = client.search_runs([exp.experiment_id], filter_string=f"tags.`otel_rl.run_id` = '{run}'")
    mlflow.set_tracking_uri(url)
    mlflow.set_experiment(experiment)
    frame = mlflow.load_table(path, run_ids=[found.info.run_id])
    return frame.to_dict("records")
