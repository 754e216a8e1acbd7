"""The OTel API boundary, driven the way third-party instrumentation drives it: the global meter
provider, observable instruments with plain and generator callbacks, their deadline, a second
run, a fork, the logs API, and an SDK meter provider installed first. Each case runs in a fresh
interpreter (OTel's global providers can be set once per process)."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap

from conftest import ROOT, read_tensorboard


def _run(code: str, tmp_path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", textwrap.dedent(code)], capture_output=True, text=True,
                          timeout=120, cwd=tmp_path, env={"PYTHONPATH": str(ROOT), "PATH": "/usr/bin:/bin",
                                                          "OTEL_RL_SYSTEM_METRICS": "false",
                                                          "XDG_STATE_HOME": str(tmp_path / "state")})


def test_observables_follow_the_current_run_and_take_generators_and_their_deadline(tmp_path):
    """A library creates its observable instruments once, at import, on the global meter (as
    instrumentation does): a plain callback and a generator callback observe into whichever run
    is current, the second run included, each with a ``timeout_millis``."""
    proc = _run(f"""
        import json, otel_rl
        from opentelemetry import metrics
        from opentelemetry.metrics import Observation
        deadlines = []

        def plain(options):
            deadlines.append(options.timeout_millis)
            return [Observation(1.0)]

        def generator():
            options = yield
            while True:
                deadlines.append(options.timeout_millis)
                options = yield [Observation(2.0)]

        meter = metrics.get_meter("lib")  # before any run, as a module at import
        meter.create_observable_gauge("lib/plain", callbacks=[plain])
        meter.create_observable_gauge("lib/generator", callbacks=[generator()])
        for run in ("first", "second"):
            otel_rl.init({{"run_name": run, "export_interval_s": 0.05,
                           "tensorboard": {{"log_dir": {str(tmp_path / "tb")!r}}}}})
            otel_rl.set_step(0)
            import time; time.sleep(0.5)
            otel_rl.shutdown()
        print(json.dumps({{"deadlines": deadlines}}))
    """, tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    deadlines = json.loads(proc.stdout.strip().splitlines()[-1])["deadlines"]
    assert deadlines and all(d > 0 for d in deadlines)
    for run in ("first", "second"):
        scalars = read_tensorboard(tmp_path / "tb" / run)["scalars"]
        assert scalars["lib/plain"] == {0: 1.0} and scalars["lib/generator"] == {0: 2.0}, (run, scalars)


def test_a_value_recorded_in_a_forked_child_is_explained_not_lost_silently(tmp_path):
    """A DataLoader worker or a vectorized environment forks the training process and records
    there: the parent's run does not run in the child, so the child is told once, with what to do,
    and the parent's values all arrive."""
    proc = _run(f"""
        import os, otel_rl
        from opentelemetry import metrics
        otel_rl.init({{"run_name": "fork", "tensorboard": {{"log_dir": {str(tmp_path / "tb")!r}}}}})
        gauge = metrics.get_meter("t").create_gauge("x")
        otel_rl.set_step(0)
        gauge.set(1.0)
        pid = os.fork()
        if pid == 0:
            gauge.set(99.0)
            gauge.set(98.0)
            os._exit(0)
        os.waitpid(pid, 0)
        otel_rl.set_step(1)
        gauge.set(2.0)
        assert otel_rl.shutdown()
    """, tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stderr.count("recorded in a forked child") == 1, proc.stderr[-3000:]
    assert "call otel_rl.init() in the child" in proc.stderr
    assert read_tensorboard(tmp_path / "tb" / "fork")["scalars"]["x"] == {0: 1.0, 1: 2.0}


def test_an_sdk_meter_provider_installed_first_is_refused_clearly(tmp_path):
    """Under opentelemetry-instrument (or an app that set up the SDK), the global meter provider
    is the SDK's: init says so and what to do, instead of recording nothing."""
    proc = _run(f"""
        import otel_rl
        from opentelemetry import metrics
        from opentelemetry.sdk.metrics import MeterProvider
        metrics.set_meter_provider(MeterProvider())
        try:
            otel_rl.init({{"run_name": "sdk", "tensorboard": {{"log_dir": {str(tmp_path / "tb")!r}}}}})
        except otel_rl.ConfigError as exc:
            print("refused:", exc)
        run = otel_rl.init({{"run_name": "sdk", "tensorboard": {{"log_dir": {str(tmp_path / "tb")!r}}}}},
                           set_global=False)
        otel_rl.set_step(0)
        run.get_meter("t").create_gauge("x").set(5.0)
        assert run.shutdown()
    """, tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "refused: otel_rl.init: a meter provider is already installed" in proc.stdout
    assert "set_global=False" in proc.stdout
    assert read_tensorboard(tmp_path / "tb" / "sdk")["scalars"]["x"] == {0: 5.0}


def test_ordinary_log_records_are_counted_as_ignored_and_samples_kept(tmp_path):
    """The global logs provider: a record with an event name is a sample row; an ordinary log
    record (no event name) is not silently dropped: counted and said once."""
    proc = _run(f"""
        import json, otel_rl
        from opentelemetry import _logs
        run = otel_rl.init({{"run_name": "logs", "tensorboard": {{"log_dir": {str(tmp_path / "tb")!r}}}}})
        otel_rl.set_step(3)
        logger = _logs.get_logger("app")
        logger.emit(body="an ordinary line")
        logger.emit(body="another")
        logger.emit(body={{"prompt": "2+2", "reward": 1.0}}, event_name="rollouts")
        otel_rl.shutdown()
        print(json.dumps(run.stats()["ignored_log_records"]))
    """, tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert json.loads(proc.stdout.strip().splitlines()[-1]) == 2
    assert proc.stderr.count("a log record without an event_name") == 1
    assert "rollouts/text_summary" in read_tensorboard(tmp_path / "tb" / "logs")["tensors"]


def test_unit_description_and_scope_reach_otlp_and_prometheus_help(tmp_path, otlp_receiver):
    """An instrument's unit, description and meter (the instrumentation scope) are on the OTLP
    metric, and in Prometheus' # HELP, in the trainer and through a real collector."""
    import urllib.request

    from otel_rl_collector import create

    collector = create({"receivers": {"http": {"port": 0}, "grpc": {"enabled": False}},
                        "prometheus": {"enabled": True, "host": "127.0.0.1", "port": 0},
                        "tensorboard": {"enabled": False}}).start()
    try:
        proc = _run(f"""
            import otel_rl
            from opentelemetry import metrics
            tokens = metrics.get_meter("trainer").create_counter("tokens", unit="{{token}}",
                                                                 description="Tokens processed")
            for url in ({otlp_receiver.url!r}, "http://127.0.0.1:{collector.http_port}"):
                otel_rl.init({{"run_name": "meta", "tensorboard": {{"enabled": False}},
                               "otlp": {{"enabled": True, "endpoint": url}}}})
                otel_rl.set_step(0)
                tokens.add(5)
                otel_rl.get_pipeline().force_flush()  # a second batch: the info came with the first
                otel_rl.set_step(1)
                tokens.add(5)
                assert otel_rl.shutdown()
        """, tmp_path)
        assert proc.returncode == 0, proc.stderr[-3000:]
        sent = [(sm.scope.name, m) for _, r in otlp_receiver.requests if _ == "/v1/metrics"
                for rm in r.resource_metrics for sm in rm.scope_metrics for m in sm.metrics if m.name == "tokens"]
        assert len(sent) == 2 and all(scope == "trainer" and m.unit == "{token}" and m.description == "Tokens processed"
                            for scope, m in sent), sent
        prom = next(w.sink for w in collector.workers if w.sink.name == "prometheus")
        with urllib.request.urlopen(f"http://127.0.0.1:{prom.port}/metrics", timeout=10) as r:
            text = r.read().decode()
    finally:
        collector.shutdown()
    assert "# HELP tokens_total tokens: Tokens processed ({token})" in text, text[:2000]
