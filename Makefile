# The README's commands. Each one sets up what it needs on a fresh Debian/Ubuntu machine.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)
ARGS ?=

.PHONY: train test data bench bench-accuracy bench-cli bench-sklearn bench-serve fuzz postgres prometheus chromium curl clean

train: data          ## train the default recipe, evaluate it on the test set, write runs/<name>/
	$(BIN)/fashion-mlp train $(ARGS)

test: data $(BIN)/.test-deps postgres prometheus chromium curl   ## lint, then run every test
	$(BIN)/ruff check src tests benchmarks
	$(BIN)/ruff format --check src tests benchmarks
	$(BIN)/python -m pytest $(ARGS)

data: $(BIN)/.installed   ## find or fetch Fashion-MNIST; falls back to Debian's package
	$(BIN)/fashion-mlp data || { \
	  echo "download failed: installing Debian's dataset-fashion-mnist instead" >&2; \
	  $(SUDO) apt-get update -qq && $(SUDO) apt-get install -y -qq dataset-fashion-mnist && \
	  $(BIN)/fashion-mlp data --no-download; }

bench: data $(BIN)/.bench-deps   ## speed against PyTorch and scikit-learn; writes benchmarks/results.json
	$(BIN)/python benchmarks/run.py $(ARGS)

bench-accuracy: data $(BIN)/.bench-deps   ## test accuracy of each recipe and peer; writes benchmarks/accuracy.json
	$(BIN)/python benchmarks/accuracy.py $(ARGS)

bench-sklearn: data $(BIN)/.bench-deps   ## our estimator against scikit-learn's MLPClassifier: under dask-ml's Incremental, and fit; writes benchmarks/sklearn.json
	$(BIN)/python benchmarks/sklearn_bench.py $(ARGS)

bench-serve: data $(BIN)/.test-deps .venv-mlserver/.installed   ## our server against MLServer under hey, and a soak; writes benchmarks/serve.json
	@command -v hey >/dev/null 2>&1 && command -v wrk >/dev/null 2>&1 || { \
	  $(SUDO) apt-get update -qq && $(SUDO) apt-get install -y -qq hey wrk; }
	$(BIN)/python benchmarks/serve_bench.py $(ARGS)

.venv-mlserver/.installed: pyproject.toml   # MLServer in a virtual environment of its own: its pins stay there
	$(PYTHON) -m venv .venv-mlserver
	.venv-mlserver/bin/python -m pip install -q "mlserver==1.7.1"
	.venv-mlserver/bin/python -m pip install -q --no-deps -e .
	touch $@

bench-cli: $(BIN)/.installed   ## how fast --help and --version answer, for every command (median of 5)
	$(BIN)/python benchmarks/cli_speed.py

FUZZ_SECONDS ?= 600
FUZZ_TARGETS ?= $(shell $(BIN)/python -m tests.fuzz.run list 2>/dev/null)
fuzz: data $(BIN)/.fuzz-deps   ## atheris on every loader of untrusted input, FUZZ_SECONDS each (two at a time)
	@mkdir -p fuzz-logs
	echo $(FUZZ_TARGETS) | tr ' ' '\n' | xargs -P 2 -I{} sh -c \
	  '$(BIN)/python -m tests.fuzz.run {} --seconds $(FUZZ_SECONDS) > fuzz-logs/{}.log 2>&1 \
	   && echo "{}: $$(grep "^Done" fuzz-logs/{}.log)" || { echo "{}: FAILED, see fuzz-logs/{}.log"; exit 1; }'

$(BIN)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV) 2>/dev/null || { \
	  $(SUDO) apt-get update -qq && $(SUDO) apt-get install -y -qq python3-venv && \
	  rm -rf $(VENV) && $(PYTHON) -m venv $(VENV); }
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -e .
	touch $@

$(BIN)/.test-deps: $(BIN)/.installed
	$(BIN)/python -m pip install -q -e '.[test,postgres]'
	touch $@

postgres:   ## a PostgreSQL server for the shared-storage search test (the test starts its own cluster)
	@ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || { \
	  $(SUDO) apt-get update -qq && $(SUDO) apt-get install -y -qq postgresql || \
	  echo "could not install postgresql: its test will be skipped" >&2; }

prometheus:   ## Debian's Prometheus, which the metrics test starts to scrape the server's /metrics
	@command -v prometheus >/dev/null 2>&1 || { \
	  $(SUDO) apt-get update -qq && $(SUDO) apt-get install -y -qq prometheus || \
	  echo "could not install prometheus: its test will be skipped" >&2; }

chromium:   ## Debian's Chromium, which the page's tests drive with Playwright
	@command -v chromium >/dev/null 2>&1 || [ -x /usr/bin/chromium ] || { \
	  $(SUDO) apt-get update -qq && $(SUDO) apt-get install -y -qq chromium || \
	  echo "could not install chromium: the page's browser tests will be skipped" >&2; }

curl:   ## curl, one of the real clients the server's tests send over-limit bodies with
	@command -v curl >/dev/null 2>&1 || { \
	  $(SUDO) apt-get update -qq && $(SUDO) apt-get install -y -qq curl || \
	  echo "could not install curl: its test will be skipped" >&2; }

$(BIN)/.fuzz-deps: $(BIN)/.test-deps
	$(BIN)/python -m pip install -q -e '.[test,fuzz]'
	touch $@

$(BIN)/.bench-deps: $(BIN)/.installed
	$(BIN)/python -m pip install -q -e '.[bench]'
	touch $@

clean:
	rm -rf $(VENV) runs build src/*.egg-info .pytest_cache .ruff_cache
