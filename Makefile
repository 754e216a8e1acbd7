# Two commands do all the set-up on a fresh machine (Python 3.10+ with venv):
#   make demo   -> creates .venv, installs otel-rl, trains CartPole, writes TensorBoard under ./runs/
#   make test   -> installs Debian's prometheus (when missing), creates .venv, installs
#                  otel-rl[test], runs ruff and the whole test suite
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python

.PHONY: demo test bench clean system-deps

$(VENV)/.created:
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	touch $@

$(VENV)/.demo: $(VENV)/.created pyproject.toml
	$(PY) -m pip install -q -e '.[tensorboard,demo]'
	touch $@

$(VENV)/.test: $(VENV)/.created pyproject.toml
	$(PY) -m pip install -q -e '.[test]'
	$(PY) -m pip install -q --no-deps verl==0.9.1
	touch $@

# The real Prometheus server the tests scrape with (Debian package; installed when root).
system-deps:
	@command -v prometheus >/dev/null || { \
	  if [ "$$(id -u)" = 0 ]; then apt-get update -q && DEBIAN_FRONTEND=noninteractive \
	    apt-get install -y -q --no-install-recommends prometheus; \
	  else echo "install the prometheus package (sudo apt-get install prometheus)"; exit 1; fi; }

demo: $(VENV)/.demo
	$(PY) examples/cartpole_pg.py

# ruff first (seconds), then the suite on 4 workers: most tests wait on servers and subprocesses,
# so 4 workers on 2 cores finish in about half the time of one (docs/architecture.md, "Tests").
test: system-deps $(VENV)/.test
	$(PY) -m ruff check .
	$(PY) -m pytest -q -n 4

# Benchmarks (not timed tests): all of bench/ side by side, results in bench/results.md.
# BENCH_ARGS=--quick for the under-5-minutes mode.
bench: system-deps $(VENV)/.test
	$(PY) bench/run.py $(BENCH_ARGS)

clean:
	rm -rf $(VENV) runs
