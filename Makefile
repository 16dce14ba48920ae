# Two commands on a fresh machine:  `make demo`  and  `make test`.
# Each creates its own virtual environment on first use and reuses it after.
PYTHON ?= python3
VENV ?= .venv
EDGE_VENV ?= .venv-edge
PIP_FLAGS ?= -q --disable-pip-version-check

.PHONY: demo test test-edge lint clean

# The edge box's environment: the `edge` extra only, no TensorFlow.
$(EDGE_VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(EDGE_VENV)
	$(EDGE_VENV)/bin/pip install $(PIP_FLAGS) --upgrade pip
	$(EDGE_VENV)/bin/pip install $(PIP_FLAGS) -e '.[edge]'
	touch $@

# The edge environment plus the test tools, for the edge suite.
$(EDGE_VENV)/.installed-dev: $(EDGE_VENV)/.installed
	$(EDGE_VENV)/bin/pip install $(PIP_FLAGS) -e '.[edge,dev]'
	touch $@

# The full environment: edge, train (TensorFlow, Keras, tf2onnx) and dev tools.
$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(VENV)/bin/pip install $(PIP_FLAGS) --upgrade pip
	$(VENV)/bin/pip install $(PIP_FLAGS) -e '.[all,dev]'
	touch $@

# The main job on an embedded default: the daemon on generated strip frames with the bundled model,
# printing the events a ZeroMQ subscriber receives (no camera, no training, edge extra only).
demo: $(EDGE_VENV)/.installed
	$(EDGE_VENV)/bin/steel-edge demo --frames 24 --seed 0

lint: $(VENV)/.installed
	$(VENV)/bin/ruff check .
	$(VENV)/bin/mypy
	$(VENV)/bin/lint-imports

# Everything: lint, types, and the whole test suite (TensorFlow tests included).
test: lint
	$(VENV)/bin/python -m pytest

# The edge suite where only the `edge` extra is installed: TensorFlow tests skip, the rest must pass.
test-edge: $(EDGE_VENV)/.installed-dev
	$(EDGE_VENV)/bin/python -m pytest -m "not tf"

clean:
	rm -rf $(VENV) $(EDGE_VENV) .pytest_cache .mypy_cache .ruff_cache
