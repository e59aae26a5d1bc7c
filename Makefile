# mm-genre: `make serve` (the site with its demo) and `make test` (every test) on a fresh
# Debian/Ubuntu machine; each installs what it needs first.
SHELL := /bin/bash
VENV := .venv
PY := $(VENV)/bin/python
DATA ?= data
EXTRA ?= data_extra
STORYLINES ?= data_storylines
LONG ?= data_long
HOST ?= 127.0.0.1
PORT ?= 4000
export HF_HUB_OFFLINE := 1
export JEKYLL_NO_BUNDLER_REQUIRE := true
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)

.PHONY: help install system-deps python-deps node-deps vendor site serve test pipeline bench lint format clean

help:
	@echo "make serve     install, build and serve the site with the demo at http://$(HOST):$(PORT)/"
	@echo "make test      install, then run every test (pytest)"
	@echo "make pipeline DATA=DIR [EXTRA=DIR] [STORYLINES=DIR] [LONG=DIR]   re-run the pipeline (defaults: data/, data_extra/, data_storylines/, data_long/)"
	@echo "make bench     wall time and peak memory of each stage; browser, predict and serve speed"
	@echo "make lint | make format"

install: system-deps python-deps node-deps vendor

# Debian packages: Jekyll for the site, Chromium for the browser tests, Node for the JS runtime.
system-deps:
	@missing=""; \
	command -v jekyll >/dev/null || missing="$$missing jekyll ruby-webrick"; \
	command -v chromium >/dev/null || missing="$$missing chromium"; \
	command -v npm >/dev/null || missing="$$missing nodejs npm"; \
	python3 -c 'import venv, ensurepip' 2>/dev/null || missing="$$missing python3-venv"; \
	if [ -n "$$missing" ]; then $(SUDO) apt-get update -q && DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -q $$missing; fi

# torch's CPU build, as CI installs it (2.14.1+cpu satisfies ==2.14.1; PyPI's default Linux wheel pulls
# gigabytes of CUDA). Its index is added only when it answers within 5 s: a machine that cannot reach it
# installs from the registries pip is configured with, instead of retrying that index for every package
# (measured here, where it does not resolve: ~10 s per package lookup with pip's default retries).
TORCH_INDEX ?= https://download.pytorch.org/whl/cpu
TORCH_FLAG = $(shell python3 -c 'import urllib.request as u; u.urlopen("$(TORCH_INDEX)/", timeout=5)' >/dev/null 2>&1 && echo --extra-index-url $(TORCH_INDEX))

$(VENV)/.installed: requirements.txt
	python3 -m venv $(VENV)
	@flag="$(TORCH_FLAG)"; \
	if [ -n "$$flag" ]; then echo "pip: torch CPU build from $(TORCH_INDEX)"; \
	else echo "pip: $(TORCH_INDEX) unreachable; installing from pip's configured registries"; fi; \
	$(VENV)/bin/pip install -q --upgrade pip $$flag && \
	$(VENV)/bin/pip install -q $$flag -r requirements.txt
	touch $@

python-deps: $(VENV)/.installed

node_modules/.installed: package.json package-lock.json
	npm ci --no-audit --no-fund
	touch $@

node-deps: node_modules/.installed

vendor: node-deps
	npm run -s vendor

site: vendor
	jekyll build --quiet

serve: system-deps vendor
	jekyll serve --host $(HOST) --port $(PORT) --baseurl ""

test: install
	$(PY) -m pytest

pipeline: python-deps
	$(PY) -m pipeline all --data "$(DATA)" --extra "$(EXTRA)" --storylines "$(STORYLINES)" --long_plots "$(LONG)"

bench: install
	$(PY) -m bench.stages --data "$(DATA)" --extra "$(EXTRA)" --storylines "$(STORYLINES)" --long_plots "$(LONG)"
	$(PY) -m bench.browser
	$(PY) -m bench.predict --data $(DATA)
	$(PY) -m bench.serve

# the folders ruff checks, here only: CI's lint job runs `make lint RUFF=...` with its own ruff (the same pin);
# a RUFF that is a path is a prerequisite (the venv's is installed), a bare command name is taken from PATH
LINTED := pipeline tests notebooks bench
RUFF ?= $(VENV)/bin/ruff
# the package's layering (pyproject.toml's [tool.importlinter] contracts), read from the source, nothing imported
LINT_IMPORTS ?= $(VENV)/bin/lint-imports

$(VENV)/bin/ruff $(VENV)/bin/lint-imports: $(VENV)/.installed

lint: $(if $(findstring /,$(RUFF)),$(RUFF)) $(if $(findstring /,$(LINT_IMPORTS)),$(LINT_IMPORTS))
	$(RUFF) check $(LINTED)
	$(RUFF) format --check $(LINTED)
	$(LINT_IMPORTS) --no-cache

format: $(if $(findstring /,$(RUFF)),$(RUFF))
	$(RUFF) format $(LINTED)
	$(RUFF) check --fix $(LINTED)

clean:
	rm -rf _site .jekyll-cache assets/vendor
