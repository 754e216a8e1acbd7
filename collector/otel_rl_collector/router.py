"""The collector's deterministic core: admitted records in, reduced records with running totals out.

::

    admitted record --> Stream.place / deltas --> Reducer (across ranks) --> Stream.totals
        --> Batch(meta={"emission": n}) for the sink set

:meth:`Router.process` is a pure function of the router's state and the record: the same
records in the same order give the same output, emission numbers included. Time comes from
the records (their arrival time, or a ``tick`` record that expires waiting groups), never from
the clock. So a collector that restarts from a snapshot (:meth:`state`) and replays its durable
ingress emits exactly what it emitted before, and each sink skips the emissions its spool
already holds: every point reaches every sink once.
"""

from __future__ import annotations

import operator
import threading
from typing import Any

from otel_rl.model.lru import LRU
from otel_rl.model.records import Batch
from otel_rl.model.semconv import BATCH_ID, SENDER_ID
from otel_rl.route.admit import Stream
from otel_rl_collector.reduce import Reducer

_RUN, _RUN_STEP = operator.attrgetter("run"), operator.attrgetter("run", "step")
_TEMPORALITY, _GAUGES = operator.attrgetter("temporality"), frozenset({""})
#: Batch ids remembered for de-duplication, per sender (a sender resends within its retry
#: window; at 10 batches/s this covers over 8 minutes of one sender), for the most recently
#: active senders. One window per sender: a flood of ids from one sender forgets only its own.
#: Checkpointed with the router.
SEEN_LIMIT = 5_000
SENDERS_LIMIT = 10_000
WORLD_LIMIT = 100_000


class Router:
    def __init__(self, reducer: Reducer, limit: int = SEEN_LIMIT) -> None:
        self.reducer = reducer
        self.stream = Stream()
        self.world: LRU = LRU(WORLD_LIMIT)  # run -> world size
        self.seen: LRU = LRU(SENDERS_LIMIT)  # sender -> LRU of its batch ids
        self._seen_limit = limit
        self.emission = 0
        self.info: dict[str, tuple] = {}  # what senders' instruments said of their metrics
        self._info_again = False
        self._seen_lock = threading.Lock()  # the request threads check and add ids concurrently

    def is_duplicate(self, sender: str, batch_id: str) -> bool:
        with self._seen_lock:
            window = self.seen.get(sender)
            return window is not None and batch_id in window

    def remember(self, ids) -> None:
        with self._seen_lock:
            for sender, batch_id in ids:
                window = self.seen.get(sender)
                if window is None:
                    window = LRU(self._seen_limit)
                self.seen.put(sender, window)
                window.put(batch_id, None)

    def new_resources(self, request, field: str) -> tuple[list[tuple[str, str]], int]:
        """Drop the resource blocks of ``request`` already admitted (a resend): the ids of the
        new ones that carry data (an empty block's id is not remembered, so a flood of them
        cannot push real ids out of a window), and how many were dropped."""
        ids, keep, new, duplicates = [], [], set(), 0
        blocks = getattr(request, field)
        for rm in blocks:
            sender = batch_id = None
            for kv in rm.resource.attributes:
                if kv.key == SENDER_ID:
                    sender = kv.value.string_value
                elif kv.key == BATCH_ID:
                    batch_id = kv.value.string_value
            if sender and batch_id and _has_data(rm):
                if (sender, batch_id) in new or self.is_duplicate(sender, batch_id):
                    duplicates += 1
                    continue
                new.add((sender, batch_id))
                ids.append((sender, batch_id))
            keep.append(rm)
        if len(keep) != len(blocks):
            del blocks[:]
            blocks.extend(keep)
        return ids, duplicates

    def process(self, record: Batch) -> Batch:
        """One admitted record (or tick) -> what goes to the sinks, numbered."""
        meta = record.meta
        if "resume" in meta:  # the collector restarted: waiting groups get a fresh timeout
            self.reducer.restart_clock(meta["resume"])
            ready, params = [], []
        elif "tick" in meta:
            ready = self.reducer.expire(now=meta["tick"], everything=bool(meta.get("all")))
            params = []
        else:
            for run, size in meta.get("world", {}).items():
                self.world.put(run, size)
            self.remember(tuple(i) for i in meta.get("ids", ()))
            self.stream.place(record)
            params = record.params
            if record.info and len(self.info) < 100_000:
                self.info.update(record.info)
            columns = record.gauge_columns()  # one sender's gauges, not made into points
            if columns is not None:
                if self.world.get(columns.run, 1) <= 1:
                    self.emission += 1  # passed through, as below
                    return self._with_info(Batch(params=list(params), meta={"emission": self.emission},
                                                 columns=columns), record)
                # gauges have no increments: deltas would return them as they are
                ready = self.reducer.add_columns(columns, self.world, now=meta.get("t", 0.0))
            else:
                points = record.points
                if (set(map(_TEMPORALITY, points)) <= _GAUGES
                        and all(self.world.get(run, 1) <= 1 for run in set(map(_RUN, points)))):
                    # gauges of runs of one rank: no increments, no totals, nothing reduced;
                    # what the steps below would return unchanged (the collector's common case)
                    self.emission += 1
                    return self._with_info(Batch(list(points), list(params), {"emission": self.emission}), record)
                ready = self.reducer.add(self.stream.deltas(points), self.world, now=meta.get("t", 0.0))
        self.emission += 1
        out = self._with_info(Batch(self.stream.totals(ready), list(params), {"emission": self.emission}), record)
        if "tick" in meta or any(self.world.get(run, 1) > 1 for run in set(map(_RUN, out.points))):
            out.points.sort(key=_RUN_STEP)  # reduced groups interleave; pass-through keeps order
        return out

    def _with_info(self, out: Batch, record: Batch) -> Batch:
        """``out`` with the record's info; after a restart, the first with points gets everything
        known (sinks remember it)."""
        out.info = dict(record.info)
        if self._info_again and out.points:
            self._info_again = False
            out.info = {**self.info, **out.info}
        return out

    def state(self) -> dict[str, Any]:
        return {"info": dict(self.info), "reducer": self.reducer.state(), "stream": self.stream.state(),
                "world": list(self.world.items()), "seen": self._seen_copy(), "emission": self.emission}

    def _seen_copy(self) -> list:
        with self._seen_lock:
            return [(sender, batch_id) for sender, window in self.seen.items() for batch_id in window]

    def restore(self, state: dict[str, Any]) -> None:
        self.reducer.restore(state["reducer"])
        self.stream.restore(state["stream"])
        self.world = LRU(WORLD_LIMIT, state["world"])
        with self._seen_lock:
            self.seen = LRU(SENDERS_LIMIT)
        self.remember(tuple(key) for key in state["seen"])
        self.emission = state["emission"]
        self.info = dict(state.get("info", {}))
        self._info_again = bool(self.info)


def _has_data(block) -> bool:
    """Whether a resource block holds any point, record or span."""
    for scopes, items in (("scope_metrics", "metrics"), ("scope_logs", "log_records"), ("scope_spans", "spans")):
        if any(getattr(scope, items) for scope in getattr(block, scopes, ())):
            return True
    return False
