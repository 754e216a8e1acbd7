"""MLflow sink: batched ``log_batch`` to a tracking server or the embedded sqlite store.

- Never one request per metric: each export becomes ``log_batch`` requests of at most
  1,000 metrics and 100 params (the server's limits; mlflow#5269 for per-call cost).
- Names are mapped into MLflow's set (``^[/\\w.\\- :]*$``, <= 250 chars, not path-like)
  by :mod:`otel_rl.model.naming`; collisions are reported once.
- Retries live in the shared delivery layer (exponential backoff on connection errors,
  5xx and 429). MLflow's own client retries are turned down to match, unless you set
  ``MLFLOW_HTTP_REQUEST_MAX_RETRIES`` / ``MLFLOW_HTTP_REQUEST_TIMEOUT`` yourself: its
  defaults retry one request for minutes (measured: 246 s against a stopped server).
- The run is created on the first write, on the delivery thread, so a server that is
  down at start never delays training: data queues and is retried.
- A 4xx refusal is permanent: the chunk is dropped, counted and logged with the reason.
- Params are immutable in MLflow: a changed value is logged once as a warning, not sent.
- Histograms become ``<key>/count|sum|mean|min|max`` scalars. ``inf`` is stored by MLflow
  as +-1.797e308; NaN is kept.
- Credentials: MLflow's own ``MLFLOW_TRACKING_USERNAME``/``_PASSWORD``/``_TOKEN`` env vars.
"""

from __future__ import annotations

import hashlib
import logging
import os
import urllib.parse
from dataclasses import dataclass
from pathlib import Path

from otel_rl.errors import PermanentError, TransientError, redact
from otel_rl.model.lru import LRU
from otel_rl.model.naming import NameMapper
from otel_rl.model.records import Batch, Point, scalar_items
from otel_rl.settings import env_default, positive
from otel_rl.sinks.base import LazyModule, Sink
from otel_rl.sinks.mlflow_tables import MlflowTables

_log = logging.getLogger(__name__)

MAX_METRICS_PER_BATCH = 1000
MAX_PARAMS_PER_BATCH = 100
MAX_PARAM_VALUE = 6000
#: The writer that created a run (a spool id, or a random id per process).
INSTANCE_TAG = "otel_rl.instance"
RUN_TAG = "otel_rl.run_id"
#: A hash of the run id, what runs are searched by: MLflow's filter syntax has no escape for a
#: quote or a trailing backslash ("bob's run" matched nothing and split into two runs).
RUN_KEY_TAG = "otel_rl.run_key"


@dataclass(frozen=True)
class MlflowConfig:
    """``mlflow:`` section. ``tracking_uri`` (env ``MLFLOW_TRACKING_URI``) defaults to the
    embedded store ``sqlite:///mlflow.db``; ``experiment`` (env ``MLFLOW_EXPERIMENT_NAME``)."""

    enabled: bool = False
    tracking_uri: str = env_default("MLFLOW_TRACKING_URI", "sqlite:///mlflow.db")
    experiment: str = env_default("MLFLOW_EXPERIMENT_NAME", "otel-rl")
    timeout_s: float = 10.0

    def validate(self, path: str) -> None:
        positive(f"{path}.timeout_s", self.timeout_s)

    def local_dirs(self) -> dict[str, str]:
        """The directory of an embedded store (``sqlite:///path``, ``file:`` or a plain path),
        checked at start; none for a server."""
        uri = self.tracking_uri or ""
        if uri.startswith("sqlite:///"):
            parent = os.path.dirname(uri[len("sqlite:///"):])
        elif uri.startswith("file:") or "://" not in uri:
            path = urllib.parse.urlsplit(uri).path if uri.startswith("file:") else uri
            parent = path
        else:
            return {}
        return {"tracking_uri": parent or "."} if parent != ":memory:" else {}


class MlflowExporter(Sink):
    """One MLflow run per otel-rl run (found again by the ``otel_rl.run_id`` tag)."""

    name = "mlflow"

    def __init__(self, config: MlflowConfig | None = None) -> None:
        self._mlflow = LazyModule("mlflow", "mlflow")  # imported by preload(), after start (about 2 s)
        super().__init__()
        self.config = config or MlflowConfig()
        os.environ.setdefault("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
        os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")  # tables are read back
        os.environ.setdefault("MLFLOW_HTTP_REQUEST_TIMEOUT", str(max(1, int(self.config.timeout_s))))
        uri = self.config.tracking_uri or ""
        if uri.startswith("sqlite:///") and uri[len("sqlite:///"):] not in ("", ":memory:"):
            Path(uri[len("sqlite:///"):]).parent.mkdir(parents=True, exist_ok=True)  # sqlite needs its folder
        self._mlflow_client = None
        self._names = NameMapper("mlflow")
        self._run_ids: dict[str, str] = {}
        self._params: dict[tuple[str, str], str] = {}
        # (batch being retried, chunks of it already sent): a retry resumes, never re-sends.
        self._resume: tuple[Batch | None, int] = (None, 0)
        self._cached_chunks: tuple[Batch | None, list] = (None, [])
        self._tables = MlflowTables(lambda: self._client)
        self._images: dict[str, LRU] = {}  # run id -> the latest images it holds, by key, step and time

    @property
    def _client(self):
        """The MLflow client, made on first use (on the delivery thread)."""
        if self._mlflow_client is None:
            from mlflow.tracking import MlflowClient

            self._mlflow_client = MlflowClient(tracking_uri=self.config.tracking_uri)
        return self._mlflow_client

    def replay_target(self) -> str:
        parts = urllib.parse.urlsplit(self.config.tracking_uri)
        if parts.password or parts.username:  # never write credentials into a spool
            parts = parts._replace(netloc=parts.hostname + (f":{parts.port}" if parts.port else ""))
        return f"mlflow:{urllib.parse.urlunsplit(parts)}"

    def location(self, run: str) -> str:
        return f"{redact(self.config.tracking_uri)} (experiment {self.config.experiment!r}, run {run!r})"

    def run_id(self, run: str) -> str:
        """The MLflow run id for otel-rl run ``run`` (created on first use)."""
        run_id = self._run_ids.get(run)
        if run_id is None:
            run_id = self._run_ids[run] = self._call(self._find_or_create, run)
        return run_id

    def _find_or_create(self, run: str) -> str:
        """This writer's own run (tagged with its instance: a process restarted on its spool finds
        it again); else, with ``resume``, the latest run of that id; else a new run."""
        client = self._client
        exp_id = self._experiment_id()
        key = run_key(run)
        tags = [f"tags.`{RUN_KEY_TAG}` = '{key}'"]
        if "'" not in run and "\\" not in run:  # runs written before the key was tagged
            tags.append(f"tags.`{RUN_TAG}` = '{run}'")
        for tag in tags:
            found = client.search_runs([exp_id], filter_string=f"{tag} and tags.`{INSTANCE_TAG}` = '{self.instance}'",
                                       max_results=1)
            if not found and self.resume:
                found = client.search_runs([exp_id], filter_string=tag, max_results=1,
                                           order_by=["attributes.start_time DESC"])
            if found:
                return found[0].info.run_id
        return client.create_run(exp_id, run_name=run, tags={RUN_TAG: run, RUN_KEY_TAG: key,
                                                             INSTANCE_TAG: self.instance}).info.run_id

    def _experiment_id(self) -> str:
        """The experiment's id, creating it if missing. Writers starting together (collector
        replicas, ranks) race to create it: the loser's ``RESOURCE_ALREADY_EXISTS`` is not a
        refusal of the data, so it reads the winner's experiment instead."""
        from mlflow.exceptions import MlflowException

        client = self._client
        exp = client.get_experiment_by_name(self.config.experiment)
        if exp is not None:
            return exp.experiment_id
        try:
            return client.create_experiment(self.config.experiment)
        except MlflowException as exc:
            if exc.error_code != "RESOURCE_ALREADY_EXISTS":
                raise
        exp = client.get_experiment_by_name(self.config.experiment)
        if exp is None:  # created and deleted in between: not a verdict on the data, try again later
            raise TransientError(f"experiment {self.config.experiment!r} was created by another writer, "
                                 "then could not be read")
        return exp.experiment_id

    def _call(self, fn, *args, **kwargs):
        """Run an MLflow call, classifying its failure for the delivery layer."""
        from mlflow.exceptions import MlflowException

        try:
            return fn(*args, **kwargs)
        except MlflowException as exc:
            status = exc.get_http_status_code()
            if 400 <= status < 500 and status != 429:
                raise PermanentError(f"{exc.error_code}: {exc.message[:500]}") from exc
            raise TransientError(f"{exc.error_code}: {exc.message[:500]}") from exc

    def write(self, batch: Batch) -> None:
        previous, done = self._resume
        start = done if previous is batch else 0
        chunks = self._chunks(batch)
        for i in range(start, len(chunks)):
            run, metrics, params = chunks[i]
            self._resume = (batch, i)
            if isinstance(metrics, str):  # a text: (run, artifact path, text)
                self._call(self._client.log_text, self.run_id(run), params, metrics)
                continue
            if isinstance(metrics, tuple):  # samples: (run, (artifact path, points), None)
                self._call(self._tables.append, self.run_id(run), *metrics)
                continue
            if isinstance(metrics, Point):  # an image, video or audio: (run, point, None)
                self._call(self._log_media, self.run_id(run), metrics)
                continue
            self._call(self._client.log_batch, self.run_id(run), metrics=metrics, params=params,
                       synchronous=True)
        self._resume = (None, 0)

    def _chunks(self, batch: Batch) -> list[tuple[str, list, list]]:
        """The batch as log_batch requests; the same list again for a retried batch."""
        if self._cached_chunks[0] is batch:
            return self._cached_chunks[1]
        from mlflow.entities import Metric, Param

        per_run: dict[str, tuple[list, list]] = {}
        for params in batch.params:
            kept = per_run.setdefault(params.run, ([], []))[1]
            kept.extend(Param(k, v) for k, v in self._new_params(params.run, params.params))
        seen: set = set()
        texts = []
        tables: dict[tuple[str, str], list] = {}
        media = []
        for p in batch.points:
            if p.kind == "media":
                media.append((p.run, p, None))
                continue
            if p.kind == "text":
                texts.append((p.run, f"text/{self._names.key(p.name)}/step-{p.step}.md", p.value))
                continue
            if p.kind == "table":
                tables.setdefault((p.run, f"tables/{self._names.key(p.name)}.json"), []).append(p)
                continue
            metrics = per_run.setdefault(p.run, ([], []))[0]
            ts = round(p.time * 1000)
            for suffix, value in scalar_items(p.value):
                key = self._names.key(p.name, p.attributes, suffix)
                # MLflow stores a metric once per (key, timestamp, step, value): an equal value
                # logged again at the same step in the same millisecond gets the next millisecond
                t = ts
                while (p.run, key, t, p.step, value) in seen:
                    t += 1
                seen.add((p.run, key, t, p.step, value))
                metrics.append(Metric(key, value, t, p.step))
        chunks = []
        for run, (metrics, params) in per_run.items():
            for i in range(0, len(metrics), MAX_METRICS_PER_BATCH):
                chunks.append((run, metrics[i:i + MAX_METRICS_PER_BATCH], []))
            for i in range(0, len(params), MAX_PARAMS_PER_BATCH):
                chunks.append((run, [], params[i:i + MAX_PARAMS_PER_BATCH]))
        chunks.extend((run, path, text) for run, path, text in texts)
        chunks.extend((run, (path, points), None) for (run, path), points in tables.items())
        chunks.extend(media)
        self._cached_chunks = (batch, chunks)
        return chunks

    def _log_media(self, run_id: str, p: Point) -> None:
        """An image with ``log_image(key=, step=)`` (the UI's image panel, by step); a video or
        audio as the artifact ``media/<key>/step-<step>-<ms>.<format>``."""
        from otel_rl.sinks.media_files import as_file, pil_image

        key = self._names.key(p.name, p.attributes)
        ms = round(p.time * 1000)
        if p.value.kind == "image":
            logged = self._images.get(run_id)
            if logged is None:  # once per run and process: what a replay after a crash finds there
                logged = self._images[run_id] = LRU(100_000, (
                    (f.path.split("+timestamp+")[0] + f"+{f.path.split('+timestamp+')[1].split('+')[0]}", None)
                    for f in self._client.list_artifacts(run_id, "images") if "+timestamp+" in f.path))
            # MLflow names an image images/<key, / as ~>+step+<step>+timestamp+<ms>+<uuid>: a new uuid
            # each call, so a replayed image would be stored twice
            name = f"images/{key.replace('/', '~')}+step+{p.step}+{ms}"
            if name in logged:
                return
            self._client.log_image(run_id, pil_image(p.value), key=key, step=p.step, timestamp=ms, synchronous=True)
            logged.put(name, None)
            return
        with as_file(p.value, f"step-{p.step}-{ms}") as path:
            self._client.log_artifact(run_id, path, f"media/{key}")

    def _new_params(self, run: str, params: dict) -> list[tuple[str, str]]:
        out = []
        for key, value in params.items():
            name = self._names.key(key)
            text = str(value)[:MAX_PARAM_VALUE]
            previous = self._params.get((run, name))
            if previous is None:
                self._params[(run, name)] = text
                out.append((name, text))
            elif previous != text:
                self.warn_once(f"param:{run}:{name}", "mlflow: param %r of run %r changed "
                                           "from %r to %r; MLflow params are immutable, keeping the first",
                                           name, run, previous, text)
        return out

    def close(self, status: str = "success") -> None:
        for run_id in self._run_ids.values():
            try:
                self._client.set_terminated(run_id, status={"success": "FINISHED", "killed": "KILLED"}.get(
                    status, "FAILED"))
            except Exception as exc:  # the server may be gone at exit; data is already sent
                _log.warning("mlflow: could not mark run %s finished: %s", run_id, exc)
        self._run_ids.clear()


def run_key(run: str) -> str:
    """The value of :data:`RUN_KEY_TAG`: hex only, safe in any filter string."""
    return hashlib.sha256(run.encode("utf-8", "surrogatepass")).hexdigest()[:32]
