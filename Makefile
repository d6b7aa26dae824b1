# The two commands of the README. Both create .venv and install what they need.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin

.PHONY: demo test bench lint clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip

$(VENV)/.installed-run: pyproject.toml | $(BIN)/python
	$(BIN)/pip install -q -e .
	touch $@

$(VENV)/.installed-test: pyproject.toml | $(BIN)/python
	$(BIN)/pip install -q -e '.[test]'
	touch $@ $(VENV)/.installed-run

demo: $(VENV)/.installed-run
	$(BIN)/audit-monitor demo --out ./demo-out

test: $(VENV)/.installed-test
	$(BIN)/python -m pytest -q

# One table of every figure against its target (bench/RESULTS.md); BENCH_ARGS=--quick for a smoke check.
bench: $(VENV)/.installed-test
	$(BIN)/python -m bench $(BENCH_ARGS)

lint: $(VENV)/.installed-test
	$(BIN)/ruff check monitor tests bench
	$(BIN)/mypy monitor

clean:
	rm -rf $(VENV) demo-out build dist .pytest_cache
