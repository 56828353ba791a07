# Two commands do all set-up on a fresh machine:
#   make run    create/reuse .venv, install atreid, run the whole pipeline -> results/ (table, plots, report)
#   make test   create/reuse .venv, install atreid with test extras, run the test suite (2 workers)
#   make check  the same set-up, then the fast tier: every test not marked slow (about 2 minutes)
#   make docs   the same set-up with the docs extra, then serve the documentation site (mkdocs serve)
VENV ?= .venv
PYTHON ?= python3
CORES ?= $(shell nproc 2>/dev/null || echo 2)
BIN := $(VENV)/bin
STAMP := $(VENV)/.atreid-installed
# The test extra (pytest, and onnx/onnxruntime for export-onnx's tests) only for make test/check.
TEST_STAMP := $(VENV)/.atreid-test-installed
# The docs extra (MkDocs, Material, mkdocstrings) only for make docs (the test extra has it too).
DOCS_STAMP := $(VENV)/.atreid-docs-installed

.PHONY: run test check docs install lint dag clean

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e .
	touch $(STAMP)

$(TEST_STAMP): $(STAMP)
	$(BIN)/python -m pip install --quiet -e '.[test]'
	touch $(TEST_STAMP)

$(DOCS_STAMP): $(STAMP)
	$(BIN)/python -m pip install --quiet -e '.[docs]'
	touch $(DOCS_STAMP)

# data/raw: the folder for your own files (data.dvc tracks it; a clone has none until then).
install: $(STAMP)
	mkdir -p data/raw

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

# The whole suite in TEST_WORKERS pytest-xdist workers, each test module (and the ViT-B
# modules together) one unit of work, longest first (tests/conftest.py). The end-to-end
# tests wait on subprocesses, SLURM and DVC about half the time: two workers fill it.
# TEST_WORKERS=0 runs it in one process.
TEST_WORKERS ?= 2
test: $(TEST_STAMP)
	$(BIN)/python -m pytest -q -n $(TEST_WORKERS) --dist loadscope --no-loadscope-reorder

# A test not marked slow that takes over FAST_LIMIT seconds fails the fast tier (tests/conftest.py).
FAST_LIMIT ?= 5
check: $(TEST_STAMP)
	$(BIN)/python -m pytest -q -m "not slow" --durations=10 --fast-limit $(FAST_LIMIT)

# The documentation site (mkdocs.yml, docs/) at http://127.0.0.1:8000, rebuilt on every edit.
docs: $(DOCS_STAMP)
	NO_MKDOCS_2_WARNING=1 $(BIN)/mkdocs serve

lint: $(STAMP)
	$(BIN)/snakemake --lint

# The job graph of the default run: docs/dag.dot always; docs/dag.svg with Graphviz's `dot`
# (Debian/Ubuntu: `sudo apt-get install graphviz`; macOS: `brew install graphviz`).
dag: $(STAMP)
	$(BIN)/snakemake results/table.csv --dag dot --quiet all > docs/dag.dot.tmp && mv docs/dag.dot.tmp docs/dag.dot
	@if command -v dot >/dev/null; then dot -Tsvg docs/dag.dot > docs/dag.svg && echo "docs/dag.svg written"; \
	else echo "docs/dag.dot written; for docs/dag.svg install Graphviz (apt-get install graphviz) and rerun make dag"; fi

clean:
	rm -rf site data models results/metrics results/table.* results/plots logs checkpoints .snakemake
