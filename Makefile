# The README's two commands: `make demo` and `make test`. Both build .venv when missing.
VENV    ?= .venv
PY      := $(VENV)/bin/python
STAMP   := $(VENV)/.installed
CHROMIUM ?= /usr/bin/chromium
# Real labelled galaxies for the demo's sim-to-real check (skipped when the folder is absent).
EXEMPLARS ?= ../shared/data/gz2-exemplars ../shared/data/gama-exemplars

.PHONY: setup test demo bench browser clean

setup: $(STAMP)

$(STAMP): pyproject.toml
	test -x $(PY) || python3 -m venv $(VENV)
	$(PY) -m pip install --disable-pip-version-check -q -e '.[dev]'
	touch $(STAMP)

# Debian's Chromium for the Playwright page test (Playwright's own browser download needs the network).
browser:
	@if [ ! -x $(CHROMIUM) ]; then \
	  if [ "$$(id -u)" = 0 ]; then (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null) || echo "warning: could not install chromium; browser tests will skip"; \
	  else echo "warning: $(CHROMIUM) missing and not root; browser tests will skip"; fi; \
	fi

# Every test, on all cores (pytest-xdist; a file's tests stay on one worker so module fixtures are
# built once). The inner loop while editing: $(PY) -m pytest -m "not slow" -n 2 (docs/architecture.md).
test: setup browser
	$(PY) -m pytest -q -ra -n auto --dist loadfile

demo: setup
	$(VENV)/bin/galaxalign demo $(foreach e,$(wildcard $(EXEMPLARS)),--exemplars $(e))

bench: setup
	@set -e; for f in bench/bench_*.py; do echo "== $$f" >&2; $(PY) $$f; done

clean:
	rm -rf runs .pytest_cache .import_linter_cache
