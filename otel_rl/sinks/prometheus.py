"""Prometheus sink: a ``/metrics`` endpoint with bounded cardinality.

- **No step label**: the translator already moved the step out of the attributes; each
  series keeps only its **latest** value (the highest step seen, then the latest time).
- Counters stay cumulative (``<name>_total``, the running total), up-down counters and
  gauges are gauges, histograms are cumulative Prometheus histograms (``_bucket{le}``,
  ``_sum``, ``_count``) accumulated from the per-step distributions.
- Labels: ``run`` plus the point attributes, names mapped to ``[a-zA-Z_][a-zA-Z0-9_]*``; an
  attribute named like a reserved label (``run``, ``le`` on a histogram) becomes ``attr_<name>``,
  two that map to one label keep apart with a hash suffix, and a metric name that another kind
  already exposes gets ``_<kind>``: the output is always valid (``promtool check metrics``).
  Hyperparameters never become labels. ``max_series`` bounds memory: past it the least
  recently updated series is evicted (logged once).
- Metric names: ``/ . -`` and other illegal characters become ``_``
  (``train/loss`` -> ``train_loss``, ``hw.gpu.utilization`` -> ``hw_gpu_utilization``).
"""

from __future__ import annotations

import hashlib
import logging
import math
import operator
import re
import threading
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from otel_rl.errors import ConfigError
from otel_rl.model.records import Batch, HistogramValue, Point
from otel_rl.settings import env_default, positive
from otel_rl.sinks.base import Sink

_log = logging.getLogger(__name__)

_NAME_ILLEGAL = re.compile(r"[^a-zA-Z0-9_:]")
_LABEL_ILLEGAL = re.compile(r"[^a-zA-Z0-9_]")
CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"


@dataclass(frozen=True)
class PrometheusConfig:
    """``prometheus:`` section: where ``/metrics`` listens (env ``OTEL_RL_PROMETHEUS_HOST`` /
    ``_PORT``; port 0 picks a free one) and the series bound."""

    enabled: bool = False
    host: str = env_default("OTEL_RL_PROMETHEUS_HOST", "127.0.0.1")
    port: int = env_default("OTEL_RL_PROMETHEUS_PORT", 9464, int)
    max_series: int = 10_000

    def validate(self, path: str) -> None:
        positive(f"{path}.max_series", self.max_series)
        if not 0 <= self.port <= 65535:
            raise ConfigError(f"{path}.port: {self.port} is not a port (0-65535; 0 picks a free one)")


def metric_name(name: str) -> str:
    out = _NAME_ILLEGAL.sub("_", name)
    return out if not out[:1].isdigit() else "_" + out


def label_name(key: str) -> str:
    out = _LABEL_ILLEGAL.sub("_", key)
    if out[:1].isdigit():
        out = "_" + out
    return "attr" + out if out.startswith("__") else out


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


def _number(value: float) -> str:
    if math.isnan(value):
        return "NaN"
    if math.isinf(value):
        return "+Inf" if value > 0 else "-Inf"
    return repr(float(value))


#: What a metric name gets when another kind already exposes its family (names with the type
#: in them, like ``x_histogram``, are what promtool's linter warns about).
_KIND_SUFFIX = {"gauge": "value", "sum": "level", "counter": "events", "histogram": "distribution"}


_KIND, _GAUGE = operator.attrgetter("kind"), frozenset({"gauge"})
_STEP_TIME, _SERIES = operator.attrgetter("step", "time"), operator.attrgetter("name", "kind", "run", "attributes")


class _Series:
    __slots__ = ("kind", "step", "time", "value", "buckets", "edges", "count", "sum", "help")

    def __init__(self, kind: str, help_text: str = "") -> None:
        self.kind = kind
        self.help = help_text  # the OTel metric name as written
        self.step, self.time, self.value = -1, 0.0, 0.0
        self.buckets: dict[float, int] | None = {}  # upper edge -> count (not cumulative)
        self.edges: tuple | None = None  # the upper edges of the first distribution
        self.count, self.sum = 0, 0.0


class PrometheusExporter(Sink):
    """Keeps the latest value per series and serves it at ``http://host:port/metrics``."""

    name = "prometheus"

    def __init__(self, config: PrometheusConfig | None = None, serve: bool = True) -> None:
        """``serve=False``: no HTTP server, :meth:`render` only (the collector's own /metrics)."""
        super().__init__()
        self.config = config or PrometheusConfig()
        self._series: OrderedDict[tuple, _Series] = OrderedDict()
        self._series_lock = threading.Lock()
        self._described: dict[str, str] = {}  # OTel metric name -> its description (and unit) for # HELP
        self._keys: dict[tuple, tuple] = {}
        self._families: dict[str, str] = {}  # exposed family name -> the kind that owns it
        self.evicted = 0
        #: Series whose metric or label name was changed to keep the exposition valid.
        self.renamed = 0
        #: More exposition text served after this sink's own (the collector's self-metrics, so that
        #: one ``prometheus.io/port`` annotation scrapes both); None: nothing more.
        self.also_serve: Callable[[], str] | None = None
        exporter = self

        class Handler(BaseHTTPRequestHandler):
            timeout = 5.0  # a connection that sends no request is closed after it (a thread each)

            def do_GET(self):  # noqa: N802
                if self.path.split("?")[0] != "/metrics":
                    self.send_error(404, "only /metrics is served here")
                    return
                text = exporter.render()
                if exporter.also_serve is not None:
                    text += exporter.also_serve()
                body = text.encode()
                self.send_response(200)
                self.send_header("Content-Type", CONTENT_TYPE)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args):
                pass

        self._server = None
        self.port = None
        if not serve:
            return
        try:
            self._server = BoundedHTTPServer((self.config.host, self.config.port), Handler)
        except OSError as exc:
            raise ConfigError(f"prometheus: cannot listen on {self.config.host}:{self.config.port}: "
                              f"{exc.strerror or exc} (prometheus.port; 0 picks a free one)") from None
        self._server.daemon_threads = True
        self.port = self._server.server_address[1]
        self._thread = threading.Thread(target=self._server.serve_forever, name="otel-rl-prometheus",
                                        daemon=True)
        self._thread.start()
        _log.info("prometheus: serving http://%s:%d/metrics", self.config.host, self.port)

    def location(self, run: str) -> str:
        return f"http://{self.config.host}:{self.port}/metrics"

    def write(self, batch: Batch) -> None:
        for name, (unit, description, _scope) in batch.info.items():
            if (description or unit) and len(self._described) < 100_000:
                self._described[name] = f"{description} ({unit})" if unit and description else description or unit
        keys, all_series, to_end = self._keys, self._series, self._series.move_to_end
        columns = batch.gauge_columns()
        points = columns.last_per_series() if columns is not None else batch.points
        if columns is None and len(points) > 64 and set(map(_KIND, points)) == _GAUGE:
            order = list(map(_STEP_TIME, points))
            if order == sorted(order):
                # (step, time) never goes down in this batch: the last point of each series is
                # the one the loop below would keep, so only that one is applied
                points = dict(zip(map(_SERIES, points), points)).values()
        with self._series_lock:
            for p in points:
                # the common case inline: a scalar gauge of a known series (else _update)
                if p.kind == "gauge" and p.value.__class__ is float:
                    key = keys.get((p.name, "gauge", p.run, p.attributes))
                    series = all_series.get(key) if key is not None else None
                    if series is not None:
                        to_end(key)
                        if p.step > series.step or (p.step == series.step and p.time >= series.time):
                            series.step, series.time, series.value = p.step, p.time, p.value
                        continue
                self._update(p)

    def _update(self, p: Point) -> None:
        if p.kind in ("text", "table", "media"):
            return  # texts and samples are not series
        raw = (p.name, p.kind, p.run, p.attributes)
        key = self._keys.get(raw)
        if key is None:
            key = (self._family(p.name, p.kind), p.kind, self._labels(p))
            if len(self._keys) < 4 * self.config.max_series:
                self._keys[raw] = key
        series = self._series.get(key)
        if series is None:
            series = self._series[key] = _Series(p.kind, p.name)
            if len(self._series) > self.config.max_series:
                self._series.popitem(last=False)
                self.evicted += 1
                self.warn_once("evict", "prometheus: more than %d series; evicting the least "
                                           "recently updated (counted in evicted)", self.config.max_series)
        self._series.move_to_end(key)
        if isinstance(p.value, HistogramValue):  # per-step distributions add up to a cumulative one
            edges = tuple(right for _, right, _ in p.value.buckets)
            if series.edges is None:
                series.edges = edges
            if series.buckets is not None and edges != series.edges:
                # bins fitted to each step's data: adding them up would make a new `le` series
                # every step; the series keeps _count and _sum only (fixed bounds: see docs/guide.md, "Prometheus")
                series.buckets = None
                self.warn_once(f"edges:{p.name}", "prometheus: histogram %r changes its bucket bounds "
                               "between steps (bins fitted to the data); exported as _count and _sum "
                               "only (give the instrument explicit_bucket_boundaries_advisory for "
                               "buckets)", p.name)
            if series.buckets is not None:
                for _, right, count in p.value.buckets:
                    series.buckets[right] = series.buckets.get(right, 0) + count
            series.count += p.value.count
            series.sum += p.value.sum
        elif p.increment is not None or (p.step, p.time) >= (series.step, series.time):
            # a gauge: the value of the latest step wins, not the last sent; a sum: the running
            # total as last admitted (a late increment at an older step still raises it)
            series.step, series.time, series.value = p.step, p.time, p.value

    def _family(self, name: str, kind: str) -> str:
        """The metric family name of ``name``: valid, and never one family with two types (a
        gauge ``x_total`` and a counter ``x``, a gauge and a histogram both ``x``): the later
        kind gets ``_<kind>`` appended (reported once, counted in ``renamed``)."""
        family = metric_name(name) or "unnamed"
        exposed = family + "_total" if kind == "counter" else family
        owner = self._families.get(exposed)
        if owner is None or owner == kind:
            if owner is None and len(self._families) < 4 * self.config.max_series:
                self._families[exposed] = kind
            return family
        renamed = f"{family}_{_KIND_SUFFIX[kind]}"
        self.renamed += 1
        self.warn_once(f"family:{exposed}", "prometheus: %r (%s) would share the metric family %r with a %s; "
                       "exported as %r (counted in renamed)", name, kind, exposed, owner, renamed)
        return renamed

    def _labels(self, p: Point) -> tuple:
        """``run`` plus the attributes as valid, unique label names: an attribute named like a
        reserved label (``run``; ``le`` on a histogram) becomes ``attr_<name>``; two attributes
        that map to one name (``a.b`` and ``a_b``) keep apart with a hash suffix (reported once,
        counted in ``renamed``)."""
        labels = [("run", p.run)]
        used = {"run"}
        reserved = {"run", "le", "quantile"} if p.kind == "histogram" else {"run"}
        for key, value in p.attributes:
            label = label_name(key) or "attr_"
            if label in reserved:
                label = "attr_" + label
            if label in used:
                suffixed = f"{label}_{hashlib.blake2b(key.encode('utf-8', 'surrogatepass'), digest_size=3).hexdigest()}"
                self.renamed += 1
                self.warn_once(f"label:{label}", "prometheus: attribute %r of %r maps to the label %r that "
                               "another attribute has; exported as %r (counted in renamed)", key, p.name,
                               label, suffixed)
                label = suffixed
            used.add(label)
            labels.append((label, value))
        return tuple(labels)

    def render(self) -> str:
        with self._series_lock:
            items = sorted(self._series.items(), key=lambda kv: kv[0])
        lines: list[str] = []
        typed: set[str] = set()
        for (name, kind, labels), s in items:
            if kind == "counter":
                name += "_total"
            prom_type = {"counter": "counter", "histogram": "histogram"}.get(kind, "gauge")
            if name not in typed:
                typed.add(name)
                help_text = s.help or name
                described = self._described.get(s.help)
                if described:
                    help_text = f"{help_text}: {described}"
                help_text = help_text.replace("\\", "\\\\").replace("\n", "\\n")
                lines.append(f"# HELP {name} {help_text}")
                lines.append(f"# TYPE {name} {prom_type}")
            label_text = ",".join(f'{k}="{_escape(v)}"' for k, v in labels)
            if kind != "histogram":
                lines.append(f"{name}{{{label_text}}} {_number(s.value)}")
                continue
            running = 0
            for edge in sorted(e for e in s.buckets or () if math.isfinite(e)):
                running += s.buckets[edge]
                lines.append(f'{name}_bucket{{{label_text},le="{_number(edge)}"}} {running}')
            if s.buckets is not None:
                lines.append(f'{name}_bucket{{{label_text},le="+Inf"}} {s.count}')
            lines.append(f"{name}_sum{{{label_text}}} {_number(s.sum)}")
            lines.append(f"{name}_count{{{label_text}}} {s.count}")
        return "\n".join(lines) + "\n"

    def close(self, status: str = "success") -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()


class BoundedHTTPServer(ThreadingHTTPServer):
    """At most ``max_connections`` connections served at once (a thread each), and at most
    ``per_client`` from one address; more are closed at accept. With the handler's ``timeout``,
    silent connections cannot pile up threads, and one client cannot take every slot."""

    daemon_threads = True

    def __init__(self, address, handler, max_connections: int = 256, per_client: int = 8) -> None:
        super().__init__(address, handler)
        self._max, self._per_client = max_connections, per_client
        self._open: dict[str, int] = {}
        self._open_lock = threading.Lock()

    def process_request(self, request, client_address) -> None:
        host = client_address[0] if client_address else ""
        with self._open_lock:
            if sum(self._open.values()) >= self._max or self._open.get(host, 0) >= self._per_client:
                refused = True
            else:
                refused = False
                self._open[host] = self._open.get(host, 0) + 1
        if refused:
            self.shutdown_request(request)
            return
        super().process_request(request, client_address)

    def process_request_thread(self, request, client_address) -> None:
        try:
            super().process_request_thread(request, client_address)
        finally:
            host = client_address[0] if client_address else ""
            with self._open_lock:
                left = self._open.get(host, 1) - 1
                if left > 0:
                    self._open[host] = left
                else:
                    self._open.pop(host, None)
