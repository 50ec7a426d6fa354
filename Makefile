# Every target creates .venv and installs the project itself, so a fresh machine needs nothing else.
# Two stamps: `make demo` installs chatsdk alone (quick); `make test` and the others install
# the dev extra on top, into the same venv. The dev stamp implies the demo one.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
PIP := $(BIN)/python -m pip --disable-pip-version-check --quiet
DEMO_STAMP := $(VENV)/.installed-demo
STAMP := $(VENV)/.installed

.PHONY: demo test lint bench clean

$(BIN)/python:
	$(PY) -m venv $(VENV)

$(DEMO_STAMP): pyproject.toml | $(BIN)/python
	$(PIP) install -e .
	touch $(DEMO_STAMP)

$(STAMP): pyproject.toml | $(BIN)/python
	$(PIP) install --upgrade pip
	$(PIP) install -e '.[dev]'
	touch $(DEMO_STAMP) $(STAMP)

demo: $(DEMO_STAMP)
	$(BIN)/chatsdk demo
	@echo
	@echo "To use chatsdk from your shell now: . $(BIN)/activate  (then 'chatsdk --help')"

test: $(STAMP)
	$(BIN)/python -m pytest -q
	@command -v chromium >/dev/null || command -v chromium-browser >/dev/null \
		|| command -v google-chrome >/dev/null || command -v google-chrome-stable >/dev/null \
		|| echo "make test: WARNING: the 2 browser tests did NOT run (no Chromium on PATH):" \
			"install it (apt-get install chromium) and run make test again"

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check chatsdk
	$(BIN)/mypy chatsdk

bench: $(STAMP)
	$(PIP) install -r benchmarks/requirements.txt
	$(BIN)/python benchmarks/run.py

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache build dist
