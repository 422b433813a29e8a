# budget-edge: the two quickstart commands are `make demo` and `make test`.
VENV ?= .venv
PY := $(VENV)/bin/python
PIP := $(PY) -m pip
FMNIST_DIR := /usr/share/datasets/fashion-mnist
EXTRAS := ort,export,plot,serve,sign,dev

.PHONY: setup demo test test-slow lint clean

$(VENV)/.installed: pyproject.toml
	python3 -m venv $(VENV)
	$(PIP) install -q --upgrade pip
	# CPU build from local disk; a bare `torch` would pull a multi-GB CUDA build.
	$(PIP) install -q torch==2.13.0
	$(PIP) install -q -e ".[train,$(EXTRAS)]"
	# Type stubs only; --no-deps because tensorrt itself needs a GPU index.
	$(PIP) install -q --no-deps "tensorrt-stubs>=10"
	touch $@

setup: $(VENV)/.installed fashion-mnist

fashion-mnist:
	@if [ -f $(FMNIST_DIR)/train-images-idx3-ubyte.gz ]; then \
	  echo "Fashion-MNIST found in $(FMNIST_DIR)"; \
	elif command -v apt-get >/dev/null 2>&1 && [ "$$(id -u)" = 0 ]; then \
	  (apt-get install -y -q dataset-fashion-mnist >/dev/null 2>&1 || \
	   (apt-get update -q >/dev/null && apt-get install -y -q dataset-fashion-mnist >/dev/null)) && \
	  echo "Fashion-MNIST installed in $(FMNIST_DIR)"; \
	else \
	  echo "Fashion-MNIST missing: run 'sudo apt-get install -y dataset-fashion-mnist'" \
	       "or pass --data-dir to a folder with the four IDX .gz files."; \
	fi

demo: setup
	$(VENV)/bin/budget-edge demo

# One worker per core; a test file stays on one worker, so its module fixtures (exported
# artifacts, trained checkpoints) are built once. Files go out in the order
# tests/conftest.py sets (slow ones first), not xdist's (most tests first).
test: setup
	$(PY) -m pytest -q -n auto --dist loadfile --no-loadscope-reorder

# Tests too slow for every run: the docs' slowest lines (tests/docs/test_doc_slow.py: the
# reference checkpoints of docs/checkpoints.md, the 15-epoch reference run, torchrun) and
# the device check's dry run (run it before a lent GPU's device check).
test-slow: setup
	BUDGET_EDGE_SLOW_TESTS=1 $(PY) -m pytest -q -m slow_job

lint: setup
	$(VENV)/bin/ruff check budget_edge tests benchmarks tools
	$(VENV)/bin/ruff format --check budget_edge tests benchmarks tools
	$(VENV)/bin/mypy budget_edge
	# tensorrt-stubs ship no py.typed: this test checks the TensorRT modules against a
	# repaired copy of them (and that a removed TensorRT call is caught).
	$(PY) -m pytest -q tests/runtime/test_tensorrt_backend.py::test_typechecks_against_tensorrt_stubs tests/runtime/test_tensorrt_names.py
	$(VENV)/bin/vermin -q -t=3.10- --no-tips --violations budget_edge

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache
