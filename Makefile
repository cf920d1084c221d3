# Two commands on a fresh machine: `make demo` (the local drill) and `make test` (the test suite).
# Each installs what is missing first: Debian packages, the venv, the pinned CDK CLI.
SHELL := /bin/bash
VENV ?= .venv
PY := $(VENV)/bin/python
APT_PACKAGES := openssh-server openssh-client tmux chromium chromium-driver
export JSII_SILENCE_WARNING_DEPRECATED_NODE_VERSION := 1
export JSII_SILENCE_WARNING_END_OF_LIFE_NODE_VERSION := 20
export PATH := $(CURDIR)/node_modules/.bin:$(PATH)

.PHONY: setup apt venv npm test demo synth bench clean

setup: apt venv npm

apt:
	@missing=""; for p in $(APT_PACKAGES); do dpkg -s $$p >/dev/null 2>&1 || missing="$$missing $$p"; done; \
	if [ -n "$$missing" ]; then \
	  echo "installing Debian packages:$$missing"; \
	  SUDO=$$( [ "$$(id -u)" = 0 ] || echo sudo ); \
	  $$SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq $$missing >/dev/null; \
	fi

venv: $(VENV)/.installed

$(VENV)/.installed: requirements.txt job/requirements.txt pyproject.toml
	@test -x $(PY) || python3 -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -r requirements.txt
	$(PY) -m pip install -q --no-deps --no-build-isolation -e .
	@touch $@

npm: node_modules/.installed

node_modules/.installed: package.json package-lock.json
	npm ci --no-audit --no-fund --loglevel=error
	@touch $@

test: setup
	$(PY) -m pytest -q tests

demo: setup
	$(VENV)/bin/launcher drill

synth: setup
	cdk synth -c operator_cidr=203.0.113.7/32 --quiet

BENCHES := bench_prepare bench_loader bench_download bench_restore bench_checkpoint bench_resume \
           bench_launcher bench_results_page bench_drill bench_train_gpu
bench: setup
	@for b in $(BENCHES); do echo "== $$b"; $(PY) -m bench.$$b || exit 1; done

clean:
	rm -rf cdk.out .pytest_cache bench/out
