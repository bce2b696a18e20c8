# The two set-up commands of the README: each creates or updates .venv by itself.
PY ?= python3
VENV := .venv
STAMP := $(VENV)/.installed
# The CPU wheel of torch; a GPU user installs their own CUDA build into .venv first (see README).
TORCH_PIN ?= torch==2.13.0

.PHONY: demo test lint bench venv tour-images

$(STAMP): pyproject.toml Makefile
	test -x $(VENV)/bin/python || $(PY) -m venv $(VENV)
	$(VENV)/bin/python -m pip install -q --upgrade pip
	$(VENV)/bin/python -c "import torch" 2>/dev/null || $(VENV)/bin/python -m pip install -q "$(TORCH_PIN)"
	$(VENV)/bin/python -m pip install -q -e ".[dev]"
	touch $(STAMP)

venv: $(STAMP)

demo: $(STAMP)
	$(VENV)/bin/dsp3d demo $(ARGS)

test: $(STAMP)
	$(VENV)/bin/ruff check src tests benchmarks
	$(VENV)/bin/python -m pytest

lint: $(STAMP)
	$(VENV)/bin/ruff check src tests benchmarks
	$(VENV)/bin/ruff format --check src tests benchmarks

bench: $(STAMP)
	$(VENV)/bin/python benchmarks/bench_speed.py --out benchmarks/out

# The README tour's pictures (docs/images/), drawn by dsp3d plot on short demo runs.
tour-images: $(STAMP)
	docs/make_images.sh
