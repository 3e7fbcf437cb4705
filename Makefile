# Two entry points: `make demo` (the main job) and `make test`. Each bootstraps .venv once
# (idempotent: re-installs only when the pinned requirements change).
PYTHON ?= python3.11
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
DEMO_OUT ?= out/demo.mp4

.PHONY: venv demo test chromium

venv: $(STAMP)

$(STAMP): requirements/lock.txt requirements/no-deps.txt pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --disable-pip-version-check -r requirements/lock.txt
	$(PY) -m pip install -q --disable-pip-version-check --no-deps -r requirements/no-deps.txt
	$(PY) -m pip install -q --disable-pip-version-check --no-deps --no-build-isolation -e .
	touch $(STAMP)

# The browser test drives Debian's Chromium (Playwright's own browser download is not used).
chromium:
	@test -x /usr/bin/chromium || { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null; }

# The main job: a 2-second T2AV clip from the embedded apollo-tiny (apollo_core/assets/apollo-tiny).
demo: $(STAMP)
	$(VENV)/bin/apollo-av generate --task t2av \
		--video-prompt "a small red circle bounces on a dark blue background" \
		--audio-prompt "a low knock each time it hits the floor" --out $(DEMO_OUT)
	@echo "demo clip: $(abspath $(DEMO_OUT))"

test: $(STAMP) chromium
	$(PY) -m pytest -q
