"""The OTel global providers (meter, tracer, logger), installed once per process by the first run
that starts through any way in (``otel_rl.init``, ``Logger``, ``SummaryWriter``). They record into
the *current* run (:mod:`otel_rl.api.current`), so meter-API calls made next to a ``Logger`` land
in its run, as spans already did."""

from __future__ import annotations

import logging
import threading

from opentelemetry import _logs
from opentelemetry import metrics as _metrics
from opentelemetry import trace as _trace

from otel_rl.api import meter as _meter
from otel_rl.api import samples as _samples
from otel_rl.api.tracing import CurrentRunTracerProvider
from otel_rl.errors import ConfigError

_log = logging.getLogger(__name__)
_lock = threading.Lock()
_installed = False


def foreign_meter_provider() -> str | None:
    """The class name of an OTel meter provider installed by someone else (an SDK provider from
    ``opentelemetry-instrument`` or the app), else None."""
    from opentelemetry.metrics._internal import _ProxyMeterProvider

    existing = _metrics.get_meter_provider()
    if isinstance(existing, (_ProxyMeterProvider, _meter.MeterProvider)):
        return None
    return f"{type(existing).__module__}.{type(existing).__name__}"


def check_no_foreign_meter_provider() -> None:
    """OTel allows one meter provider per process: with another one installed, meter-API calls
    would go to it while OTel refuses otel-rl's with one warning; refuse clearly instead."""
    if _installed:
        return
    foreign = foreign_meter_provider()
    if foreign is not None:
        raise ConfigError(
            f"otel_rl.init: a meter provider is already installed ({foreign}, e.g. by "
            "opentelemetry-instrument or the app), and OTel allows one per process: meter-API calls "
            "would go to it, not to this run. Start without it, or call "
            "otel_rl.init(..., set_global=False) and record with run.get_meter(name)")


def install(who: str, strict: bool) -> bool:
    """Install otel-rl's global providers unless done already. ``strict``: a foreign meter
    provider is an error (``init``); else (``Logger``, ``SummaryWriter``, which record through
    their own methods) it is left in place with a warning that says what to call instead. True
    when otel-rl's providers are the globals."""
    global _installed
    with _lock:
        if _installed:
            return True
        foreign = foreign_meter_provider()
        if foreign is not None:
            if strict:
                check_no_foreign_meter_provider()
            _log.warning("otel-rl: %s records through its own methods; the OTel meter API stays with the "
                         "meter provider installed before it (%s), so metrics.get_meter(...) calls do not "
                         "reach this run: use run.pipeline.get_meter(name) for meter-API instruments", who,
                         foreign)
            return False
        _metrics.set_meter_provider(_meter.MeterProvider())
        _trace.set_tracer_provider(CurrentRunTracerProvider())
        _logs.set_logger_provider(_samples.LoggerProvider())
        _installed = True
        return True
