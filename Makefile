# Two entry points: `make demo` (the main job) and `make test`. Each bootstraps .venv once
# (idempotent: re-installs only when the pinned requirements change).
PYTHON ?= python3.11
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: venv demo test info

venv: $(STAMP)

$(STAMP): requirements/lock.txt requirements/no-deps.txt pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --disable-pip-version-check -r requirements/lock.txt
	$(PY) -m pip install -q --disable-pip-version-check --no-deps -r requirements/no-deps.txt
	$(PY) -m pip install -q --disable-pip-version-check --no-deps --no-build-isolation -e .
	touch $(STAMP)

info: $(STAMP)
	$(VENV)/bin/apollo-av info --preset apollo-tiny

demo: $(STAMP)
	$(VENV)/bin/apollo-av info --preset apollo-tiny

test: $(STAMP)
	$(PY) -m pytest -q
