# Two commands do all set-up on a fresh machine:
#   make run    create/reuse .venv, install atreid, run the whole pipeline -> results/ (table, plots, report)
#   make test   create/reuse .venv, install atreid with test extras, run the test suite
#   make check  the same set-up, then the fast tier: every test not marked slow (about a minute)
VENV ?= .venv
PYTHON ?= python3
CORES ?= $(shell nproc 2>/dev/null || echo 2)
BIN := $(VENV)/bin
STAMP := $(VENV)/.atreid-installed
# The test extra (pytest, and onnx/onnxruntime for export-onnx's tests) only for make test/check.
TEST_STAMP := $(VENV)/.atreid-test-installed

.PHONY: run test check install lint dag clean

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e .
	touch $(STAMP)

$(TEST_STAMP): $(STAMP)
	$(BIN)/python -m pip install --quiet -e '.[test]'
	touch $(TEST_STAMP)

install: $(STAMP)

run: $(STAMP)
	mkdir -p data/raw
	$(BIN)/snakemake --cores $(CORES)
	$(BIN)/snakemake --report results/report.html
	@echo
	@$(BIN)/atreid show-table results/table.csv
	@echo
	@echo "Results table (mean ± std over the seeds): results/table.md  (CSV: results/table.csv)"
	@echo "HTML report with every figure:             results/report.html"
	@echo "Retrieval galleries and curves:            results/galleries/, results/plots/"
	@echo "Search page (4 queries, top 10):           results/search/index.html"

test: $(TEST_STAMP)
	$(BIN)/python -m pytest -q

# A test not marked slow that takes over FAST_LIMIT seconds fails the fast tier (tests/conftest.py).
FAST_LIMIT ?= 5
check: $(TEST_STAMP)
	$(BIN)/python -m pytest -q -m "not slow" --durations=10 --fast-limit $(FAST_LIMIT)

lint: $(STAMP)
	$(BIN)/snakemake --lint

dag: $(STAMP)
	$(BIN)/snakemake --dag results/table.csv | dot -Tsvg > docs/dag.svg

clean:
	rm -rf data models results/metrics results/table.* results/plots logs checkpoints .snakemake
