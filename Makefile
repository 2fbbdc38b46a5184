# The two commands a newcomer needs: `make demo` and `make test`.
VENV    ?= .venv
PYTHON  ?= python3
DEMO_ARGS ?=
BIN     := $(VENV)/bin
STAMP   := $(VENV)/.installed-stamp

.PHONY: install demo test soak lint format bench browser clean

install: $(STAMP)

$(STAMP): pyproject.toml
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	@$(BIN)/python -m pip install -q --upgrade pip uv
	@$(BIN)/uv pip install -q --python $(BIN)/python -e '.[dev]'
	@touch $(STAMP)

# Debian's Chromium for the browser tests; never a browser downloaded by a test tool.
browser:
	@test -x /usr/bin/chromium || { \
	  if [ "$$(id -u)" = 0 ]; then apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null; \
	  else echo "browser tests need /usr/bin/chromium (apt-get install chromium)"; fi; }

# `make demo DEMO_ARGS="--port 8001 --data-dir /tmp/demo2"` runs a second demo beside the first.
demo: install
	$(BIN)/caas demo $(DEMO_ARGS)

test: install browser
	@$(BIN)/pytest -p no:cacheprovider; status=$$?; \
	  if [ $$status -eq 5 ]; then echo "no tests collected"; exit 0; fi; exit $$status

# The concurrency soak (tests/soak): a few minutes of customers, cars and a moving clock, then
# the invariants; `make test` skips it. SOAK_SECONDS=60 shortens the load.
soak: install
	@CAAS_SOAK=1 $(BIN)/pytest -p no:cacheprovider -m soak tests/soak

lint: install
	$(BIN)/ruff check src tests migrations bench
	$(BIN)/ruff format --check src tests migrations bench
	$(BIN)/mypy

format: install
	$(BIN)/ruff format src tests migrations bench
	$(BIN)/ruff check --fix src tests migrations bench

# Every benchmark at N and 10 N, one table, bench/results/latest.json (bench/README.md);
# `make bench BENCH_ARGS="--only api --api 50"` passes options to `caas bench all`.
bench: install
	$(BIN)/caas bench all $(BENCH_ARGS)

clean:
	rm -rf $(VENV) .caas .mypy_cache .ruff_cache .pytest_cache
