"""The global tracer provider: spans go to the run current where they start.

OTel allows one global tracer provider per process, but a process may hold several runs (one
after another in a notebook, several at once in a sweep). ``trace.get_tracer(...)`` returns a
tracer that, at each span start, uses the tracer provider of the current run
(:func:`otel_rl.api.recording.current`); with no run, spans are non-recording.
"""

from __future__ import annotations

from opentelemetry import trace

from otel_rl.api.current import current_run


def _current_provider():
    pipeline = current_run()
    return pipeline.tracer_provider if pipeline is not None else None


class _CurrentRunTracer(trace.Tracer):
    def __init__(self, args: tuple, kwargs: dict) -> None:
        self._args, self._kwargs = args, kwargs

    def _tracer(self) -> trace.Tracer:
        provider = _current_provider()
        if provider is None:
            return trace.NoOpTracer()
        return provider.get_tracer(*self._args, **self._kwargs)

    def start_span(self, *args, **kwargs) -> trace.Span:
        return self._tracer().start_span(*args, **kwargs)

    def start_as_current_span(self, *args, **kwargs):
        return self._tracer().start_as_current_span(*args, **kwargs)


class CurrentRunTracerProvider(trace.TracerProvider):
    def get_tracer(self, *args, **kwargs) -> trace.Tracer:
        return _CurrentRunTracer(args, kwargs)
