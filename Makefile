# make run: set up .venv and start a local 3-node cluster. make test: set up and run every test.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: run test lint venv clean bench

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[dev]'
	touch $(STAMP)

venv: $(STAMP)

run: $(STAMP)
	$(BIN)/dynakv dev-cluster --nodes 3 --data-dir ./data

test: $(STAMP)
	$(BIN)/ruff check src tests
	$(BIN)/python -m pytest -q

# The table in benchmarks/README.md: several minutes; not part of `make test`.
bench: $(STAMP)
	$(BIN)/python benchmarks/run.py

lint: $(STAMP)
	$(BIN)/ruff check src tests

clean:
	rm -rf $(VENV) data
