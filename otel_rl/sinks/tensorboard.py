"""TensorBoard sink: event files written with the ``tensorboard`` package only.

Layout: ``<log_dir>/<run>/events.out.tfevents.*``; one writer per run
directory, shared by every exporter in the process that targets it.

Values: scalars go into ``Summary.Value.simple_value``, TensorBoard's scalar
type, which is **float32**: a float64 round-trips with relative error at most
2**-24 (about 6e-8); magnitudes above 3.4e38 become +-inf; NaN and inf are kept.
Scalars of one step recorded within 5 ms of each other share one event record (its wall time
is theirs), so writing costs about one record per step, not per value; a name logged again at
the same step starts a new record, so every value is in the file. Histograms are
histogram-plugin tensors (``[k, 3]`` of left edge, right edge, count). Hyperparameters go
through the HParams plugin (session start/end info).

Steps out of order: TensorBoard's default loader drops every point of a tag from the step
where the tag's steps go backwards (DESIGN.md). So a point whose step is lower than one
already written for its tag goes to the sub-run ``<run>/late-<n>`` (the first one where the
tag has not passed that step): TensorBoard lists it as a run of its own, and every step stays
visible. A repeated step is not "backwards" (TensorBoard shows its last value; the file
holds them all).
"""

from __future__ import annotations

import logging
import time
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from otel_rl.model.naming import NameMapper
from otel_rl.model.records import Batch, HistogramValue, Point, RunParams
from otel_rl.settings import env_default, positive
from otel_rl.sinks.base import Sink, require
from otel_rl.sinks.tb_columns import write_columns
from otel_rl.sinks.tb_events import (
    F32,
    SHARED_FILES,
    EventFile,
    event_bytes,
    f32,
    media_field,
    other_scalar,
    scalar_prefix,
    set_hparam,
    summary_field,
)
from otel_rl.sinks.tb_rundirs import RUN_DIR_LOCKS, choose

_log = logging.getLogger(__name__)


@dataclass(frozen=True)
class TensorBoardConfig:
    """``tensorboard:`` section. ``log_dir`` (env ``OTEL_RL_TENSORBOARD_LOG_DIR``, default ``runs``)
    holds one sub-directory per run."""

    enabled: bool = True
    log_dir: str = env_default("OTEL_RL_TENSORBOARD_LOG_DIR", "runs")
    #: Event files kept open (one per run and late sub-run); past it the least recently used
    #: is closed and reopened when its run writes again (a collector with many runs stays
    #: within its file-descriptor limit).
    max_open_files: int = 256

    def validate(self, path: str) -> None:
        positive(f"{path}.max_open_files", self.max_open_files)

    def local_dirs(self) -> dict[str, str]:
        """Directories this section writes on this machine (checked at start)."""
        return {"log_dir": self.log_dir}


_SCALAR_KINDS = frozenset({"gauge", "counter", "sum"})
_MAX_METRIC_COLUMNS = 2_000
_SUMS = frozenset({"counter", "sum"})


class TensorBoardExporter(Sink):
    """Writes per-step scalars, histograms and hparams to TensorBoard event files."""

    name = "tensorboard"

    def __init__(self, config: TensorBoardConfig | None = None) -> None:
        require("tensorboard", "tensorboard")
        super().__init__()
        from tensorboard.compat.proto import event_pb2, summary_pb2

        self._event_pb2, self._summary_pb2 = event_pb2, summary_pb2
        self.config = config or TensorBoardConfig()
        self.log_dir = Path(self.config.log_dir)
        self._names = NameMapper("tensorboard")
        self._runs: OrderedDict = OrderedDict()  # run key -> open EventFile, least recently used first
        self._evicted: dict = {}  # run key -> (file name, size) of an event file closed for the limit
        self._hist_meta = None
        self._scalars: dict[tuple, tuple[str, bytes]] = {}  # (name, attributes) -> (tag, value prefix)
        self._spool_id: str | None = None
        self._before: dict | None = None
        self._checkpointed: dict[str, list] = {}  # run -> [file name, size] at the last checkpoint
        self._dirs: dict[str, str] = {}  # run -> its directory name under log_dir
        self._claimed: set[Path] = set()  # run directories this sink holds (tb_rundirs)
        from otel_rl.model.lru import LRU

        self._last = LRU(200_000)  # (run, generation, tag) -> highest step written
        #: run -> (its hyperparameters, its scalar tags outside ``system/``): the HParams
        #: plugin's experiment, written at close so that its metric columns are the run's own
        self._experiments: dict[str, tuple[dict, set[str]]] = {}
        #: Points written to a ``late-<n>`` sub-run because their tag had passed their step.
        self.late_points = 0
        #: Event files closed to stay within ``max_open_files`` (reopened on demand).
        self.closed_files = 0

    def replay_target(self) -> str:
        return f"tensorboard:{Path(self.config.log_dir).resolve()}"

    def location(self, run: str) -> Path:
        """``<log_dir>/<run>``; a run id that is not a plain name (``../x``, ``/abs``, control
        characters, over 128 characters) becomes a safe one with a hash suffix, never a path.
        A directory another live process writes (it holds the directory's lock,
        :mod:`.tb_rundirs`), or that holds an earlier process's event files, belongs to another
        run of the same name: this run gets ``<run>-2`` (``-3``, ...), or with ``resume`` the
        latest earlier one that no live process holds."""
        chosen = self._dirs.get(run)
        if chosen is None:
            chosen = choose(self.log_dir, run, self.resume, self._taken)
            self._dirs[run] = chosen
            self._claimed.add(self.log_dir / chosen)
        elif self.log_dir / chosen not in self._claimed:  # restored from a checkpoint: hold it again
            if not RUN_DIR_LOCKS.claim(self.log_dir / chosen):
                _log.warning("tensorboard: %s is held by another live process, which still writes it; this "
                             "process writes it too", self.log_dir / chosen)
            else:
                self._claimed.add(self.log_dir / chosen)
        return self.log_dir / chosen

    def _taken(self, directory: Path) -> bool:
        """Whether ``directory`` holds event files of another writer (not this process, not this
        sink's spool)."""
        if SHARED_FILES.holds(directory):
            return False
        files = list(directory.glob("events.out.tfevents.*")) if directory.is_dir() else []
        if self._spool_id is not None and any(f.name.endswith("." + self._spool_id) for f in files):
            return False
        return bool(files)

    def bind_spool(self, spool_id: str, state: dict | None) -> None:
        super().bind_spool(spool_id, state)
        self._spool_id = f"otel-rl-{spool_id}"
        self._checkpointed = dict((state or {}).get("files", {}))
        self._dirs.update((state or {}).get("dirs", {}))
        for key, step in (state or {}).get("last", []):
            self._last.put(tuple(key), step)
        for run, (params, tags) in (state or {}).get("experiments", {}).items():
            self._experiments[run] = (dict(params), set(tags))

    def _limit_open(self) -> None:
        """Close the least recently used event files past ``max_open_files`` (not those the
        current batch wrote to: a failed batch rolls them back)."""
        busy = self._before or {}
        for run in list(self._runs):
            if len(self._runs) <= self.config.max_open_files:
                return
            if run in busy:
                continue
            f = self._runs.pop(run)
            f.flush()
            self._evicted[run] = (f.path.name, f.size)
            if self._spool_id is None:
                SHARED_FILES.release(self._dir(run))
            else:
                f.close()
            self.closed_files += 1

    def checkpoint_state(self) -> dict:
        files = dict(self._checkpointed)
        files.update({_run_key(run): list(closed) for run, closed in self._evicted.items()})
        files.update({_run_key(run): [f.path.name, f.size] for run, f in self._runs.items()})
        self._checkpointed = files
        return {"files": files, "dirs": dict(self._dirs),
                "last": [[list(k), v] for k, v in self._last.items()],
                "experiments": {run: [params, sorted(tags)] for run, (params, tags) in self._experiments.items()}}

    def _dir(self, run: str) -> Path:
        """The directory of a run key: ``run`` or ``(run, generation)`` for a late sub-run."""
        if isinstance(run, tuple):
            return self.location(run[0]) / f"late-{run[1]}"
        return self.location(run)

    def _file(self, run) -> EventFile:
        f = self._runs.get(run)
        if f is None:
            reopened = self._evicted.pop(run, None)
            if self._spool_id is None:
                f = SHARED_FILES.acquire(self._dir(run))
            elif reopened is not None:  # closed for the limit: append to it as it is
                f = EventFile(self._dir(run), self._spool_id, reopened[1])
            else:  # fed from a spool: one file per (run, spool), cut back to the checkpoint
                name, size = self._checkpointed.get(_run_key(run), (None, None))
                f = EventFile(self._dir(run), self._spool_id, size)
                if name is not None and name != f.path.name:
                    _log.warning("tensorboard: checkpointed file %s of run %r is gone; using %s", name, run, f.path)
            self._runs[run] = f
            if reopened is None:
                _log.info("tensorboard: run %r -> %s", run, self._dir(run))
            self._limit_open()
        else:
            self._runs.move_to_end(run)
        if self._before is not None and run not in self._before:
            self._before[run] = (f, f.size)
        return f

    def write(self, batch: Batch) -> None:
        self._before = {}  # run -> (file, size before this batch), filled by _file()
        try:
            for params in batch.params:
                self._write_hparams(params)
            if len(self._scalars) > 100_000:  # a cache, bounded against clients inventing names
                self._scalars.clear()
            columns = batch.gauge_columns()
            if columns is None or not write_columns(self, columns):
                self._write_points(batch.points)
            self._last.trim()
            for f in {f for f, _ in self._before.values()}:
                f.flush()
        except BaseException:
            for f, size in self._before.values():
                f.rollback(size)
            raise
        finally:
            self._before = None

    def _write_points(self, points: list[Point]) -> None:
        """Per (run, step), in the batch's order: one event per group of values recorded within
        5 ms of each other (a repeated tag starts a new group), in the run or, for a tag already
        past ``step``, a late sub-run. One loop over the batch (this is the collector's hottest
        loop: a scalar costs a few dict operations and no protobuf object)."""
        scalars = self._scalars  # (name, attributes) -> (tag, serialized value up to its float)
        pack_f32, key, target_of, emit = F32.pack, self._names.key, self._target, self._emit
        lasts = self._last
        last_of, to_end = lasts.get, lasts.move_to_end
        groups: dict = {}  # target -> [event time, tags, serialized Summary.value fields] of the open group
        run = step = None
        for i, p in enumerate(points):
            if p.step != step or p.run != run:
                for target, group in groups.items():
                    emit(target, step, group)
                groups = {}
                run, step = p.run, p.step
            kind = p.kind
            scalar = kind in _SCALAR_KINDS and p.value.__class__ is float
            if scalar:
                entry = scalars.get((p.name, p.attributes)) or self._scalar_entry(p.name, p.attributes)
                tag = entry[0]
            else:
                tag = key(p.name, p.attributes)
            # the common case inline (the tag's steps do not go backwards); else _target.
            # self._last is trimmed to its limit after the batch (write)
            last = last_of((run, 0, tag))
            if last is None and scalar:
                self._metric_tag(run, tag)
            if last is None or step > last:
                lasts[(run, 0, tag)] = step
                to_end((run, 0, tag))
                target = run
            elif step == last:
                target = run
            elif p.increment is None and kind in _SUMS and _rewrites_tail(points, i, last):
                # corrected totals of a counter (route/admit.py: every step from the late one up
                # to where the series was): TensorBoard's loader drops the steps after a step that
                # goes back and takes the new ones, so in the run itself the viewer shows them
                lasts[(run, 0, tag)] = step
                target = run
            else:
                target = target_of(run, tag, step)
            group = groups.get(target)
            if group is None or tag in group[1] or abs(p.time - group[0]) > 0.005:
                if group is not None:
                    emit(target, step, group)
                group = groups[target] = [p.time, set(), []]
            group[1].add(tag)
            if scalar:
                try:
                    group[2].append(entry[1] + pack_f32(p.value))
                except OverflowError:  # past float32's range: +-inf, as protobuf stores it
                    group[2].append(entry[1] + f32(p.value))
            elif isinstance(p.value, HistogramValue):
                group[2].append(summary_field(self._histogram_value(tag, p.value)))
            elif kind == "text":
                group[2].append(summary_field(self._text_value(tag, p.value)))
            elif kind == "table":  # samples: a markdown table in the text plugin
                group[2].append(summary_field(self._text_value(tag, p.value.markdown())))
            elif kind == "media":  # image and audio plugins (a video: an animated GIF image)
                group[2].append(media_field(tag, p.value))
            else:  # a number that is not a float (an int from a caller's own Point)
                group[2].append(other_scalar(tag, p.value))
        for target, group in groups.items():
            emit(target, step, group)

    def _scalar_entry(self, name: str, attributes: tuple) -> tuple[str, bytes]:
        """A scalar's (tag, serialized value up to its float), cached (the cache is emptied per batch past 100k)."""
        entry = self._scalars.get((name, attributes))
        if entry is None:
            tag = self._names.key(name, attributes)
            entry = self._scalars[(name, attributes)] = (tag, scalar_prefix(tag))
        return entry

    def _target(self, run: str, tag: str, step: int):
        """``run``, or ``(run, n)`` for the first late sub-run where ``tag`` has not passed ``step``."""
        generation = 0
        while True:
            key = (run, generation, tag)
            last = self._last.get(key)
            if last is None or step >= last:
                if last != step:
                    self._last.put(key, step)
                if generation:
                    self.late_points += 1
                    self.warn_once(f"late:{run}", "tensorboard: run %r: steps of %r went backwards "
                                   "(step %d after %d); such points go to the sub-run %r so that "
                                   "TensorBoard shows them (counted in late_points)", run, tag, step,
                                   self._last.get((run, 0, tag)), f"late-{generation}")
                    return (run, generation)
                return run
            generation += 1

    def _emit(self, target, step: int, group: list) -> None:
        self._file(target).write(event_bytes(group[0], step, b"".join(group[2])))

    def _text_value(self, tag: str, text: str):
        """The text plugin's record, under ``<tag>/text_summary`` as torch's and tensorboardX's
        ``add_text`` write it."""
        from tensorboard.compat.proto import tensor_pb2, tensor_shape_pb2, types_pb2
        from tensorboard.plugins.text import metadata

        tensor = tensor_pb2.TensorProto(dtype=types_pb2.DT_STRING, string_val=[text.encode("utf-8")],
                                        tensor_shape=tensor_shape_pb2.TensorShapeProto(
                                            dim=[tensor_shape_pb2.TensorShapeProto.Dim(size=1)]))
        return self._summary_pb2.Summary.Value(
            tag=f"{tag}/text_summary", metadata=metadata.create_summary_metadata(display_name="", description=""),
            tensor=tensor)

    def _histogram_value(self, tag: str, hist: HistogramValue):
        from tensorboard.compat.proto import tensor_pb2, tensor_shape_pb2, types_pb2

        if self._hist_meta is None:
            from tensorboard.plugins.histogram import metadata

            self._hist_meta = metadata.create_summary_metadata(display_name="", description="")
        buckets = hist.finite_buckets()
        flat = [float(x) for bucket in buckets for x in bucket]
        shape = tensor_shape_pb2.TensorShapeProto(dim=[
            tensor_shape_pb2.TensorShapeProto.Dim(size=len(buckets)),
            tensor_shape_pb2.TensorShapeProto.Dim(size=3)])
        tensor = tensor_pb2.TensorProto(dtype=types_pb2.DT_DOUBLE, tensor_shape=shape, double_val=flat)
        return self._summary_pb2.Summary.Value(tag=tag, metadata=self._hist_meta, tensor=tensor)

    def _metric_tag(self, run: str, tag: str) -> None:
        """A scalar tag seen for the first time in ``run``: one of the HParams metric columns,
        unless it is a system metric (``system/...``)."""
        experiment = self._experiments.get(run)
        if experiment is not None and not tag.startswith("system/") and len(experiment[1]) < _MAX_METRIC_COLUMNS:
            experiment[1].add(tag)

    def _write_hparams(self, params: RunParams) -> None:
        from tensorboard.plugins.hparams import plugin_data_pb2

        experiment = self._experiments.setdefault(params.run, ({}, set()))
        experiment[0].update(params.params)
        scalar_tags = {tag for tag, _ in self._scalars.values()}  # tags written before the hparams
        experiment[1].update(tag for (run, generation, tag) in self._last.keys()
                             if run == params.run and not generation and tag in scalar_tags
                             and not tag.startswith("system/") and len(experiment[1]) < _MAX_METRIC_COLUMNS)

        info = plugin_data_pb2.SessionStartInfo(start_time_secs=params.time)
        for key, value in params.params.items():
            set_hparam(info.hparams[key], value)
        self._file(params.run).write(self._hparams_event(
            "_hparams_/session_start_info", plugin_data_pb2.HParamsPluginData(session_start_info=info),
            params.time))

    def _hparams_event(self, tag: str, plugin_data: Any, wall_time: float):
        from tensorboard.plugins.hparams import metadata

        value = self._summary_pb2.Summary.Value(
            tag=tag, metadata=metadata.create_summary_metadata(plugin_data), tensor=metadata.NULL_TENSOR)
        return self._event_pb2.Event(wall_time=wall_time, step=0,
                                     summary=self._summary_pb2.Summary(value=[value]))

    def _experiment_event(self, run: str):
        """The HParams plugin's experiment for ``run``: its hyperparameters and, as metric
        columns, its own scalar tags (system metrics left out). Without it the plugin makes a
        column of every scalar tag. Written once, at close (the plugin reads the first one)."""
        from tensorboard.plugins.hparams import api_pb2, plugin_data_pb2

        params, tags = self._experiments[run]
        experiment = api_pb2.Experiment(
            hparam_infos=[api_pb2.HParamInfo(name=key) for key in sorted(params)],
            metric_infos=[api_pb2.MetricInfo(name=api_pb2.MetricName(tag=tag)) for tag in sorted(tags)])
        return self._hparams_event("_hparams_/experiment", plugin_data_pb2.HParamsPluginData(experiment=experiment),
                                   time.time())

    def flush(self) -> None:
        for f in self._runs.values():
            f.flush()

    def close(self, status: str = "success") -> None:
        from tensorboard.plugins.hparams import api_pb2, plugin_data_pb2

        code = {"success": api_pb2.STATUS_SUCCESS, "failed": api_pb2.STATUS_FAILURE,
                "killed": api_pb2.STATUS_FAILURE}.get(status, api_pb2.STATUS_UNKNOWN)
        # files closed for max_open_files are reopened one at a time for their end status
        closed = [(run, None) for run in self._evicted if not isinstance(run, tuple)]
        for run, f in [*self._runs.items(), *closed]:
            if f is None:
                f = (SHARED_FILES.acquire(self._dir(run)) if self._spool_id is None
                     else EventFile(self._dir(run), self._spool_id, self._evicted[run][1]))
            if run in self._experiments:
                f.write(self._experiment_event(run))
            end = plugin_data_pb2.SessionEndInfo(status=code, end_time_secs=time.time())
            f.write(self._hparams_event("_hparams_/session_end_info",
                                        plugin_data_pb2.HParamsPluginData(session_end_info=end), time.time()))
            f.flush()
            if self._spool_id is None:
                SHARED_FILES.release(self._dir(run))
            else:
                f.close()
        self._runs.clear()
        self._evicted.clear()
        for directory in self._claimed:
            RUN_DIR_LOCKS.release(directory)
        self._claimed.clear()


def _rewrites_tail(points: list[Point], i: int, last: int) -> bool:
    """Whether the corrections of ``points[i]``'s series from ``i`` on never go down and reach
    ``last``."""
    p = points[i]
    run, name, attributes, step = p.run, p.name, p.attributes, p.step
    for q in points[i + 1:]:
        if q.increment is None and q.name == name and q.run == run and q.attributes == attributes:
            if q.step < step:
                return False
            step = q.step
    return step >= last


def _run_key(run) -> str:
    """A run key as the checkpoint names it (late sub-runs: ``run/late-<n>``)."""
    return f"{run[0]}/late-{run[1]}" if isinstance(run, tuple) else run
