# The two commands a new user needs (see README.md):
#   make demo   install into .venv, then run the embedded-default sweep (local Ray, local MLflow)
#   make test   install into .venv, then run the default test suite (slow tests: make test-slow)
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: install demo test test-slow ui bench

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[test]'
	touch $(STAMP)

install: $(STAMP)

demo: install
	$(BIN)/raypost sweep dept

test: install
	$(BIN)/pytest

test-slow: install
	$(BIN)/pytest -m slow

ui: install
	$(BIN)/raypost ui
