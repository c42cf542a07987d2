# NEO VPS ops bundle. `make demo` and `make test` set themselves up on a fresh
# Debian/Ubuntu machine as root: apt packages, the virtualenv, the stand-in image.
SHELL := /bin/bash
.SHELLFLAGS := -eu -o pipefail -c
.DEFAULT_GOAL := help

PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMPS := .stamps
export CONTAINERS_CONF ?= $(CURDIR)/standin/containers.conf
# The stand-in's Debian suite: bookworm (Debian 12, every package baked in) or trixie (Debian 13,
# a fresh image without the roles' packages), e.g. `make demo NEO_STANDIN_SUITE=trixie`.
export NEO_STANDIN_SUITE ?= bookworm
ifeq ($(NEO_STANDIN_SUITE),trixie)
export NEO_STANDIN_IMAGE ?= localhost/neo-vps-standin:debian13-fresh
else
export NEO_STANDIN_IMAGE ?= localhost/neo-vps-standin:debian12
endif
# Molecule's fresh Debian 13 platform (the production inventory's host).
export NEO_STANDIN_FRESH_IMAGE ?= localhost/neo-vps-standin:debian13-fresh
export ANSIBLE_CONFIG := $(CURDIR)/ansible.cfg
export PATH := $(CURDIR)/$(BIN):$(PATH)
# The unit and pythons suites run on every core (pytest-xdist); PYTEST_WORKERS= runs them serially.
export PYTEST_WORKERS ?= -n auto

APT_PACKAGES := podman runc debootstrap python3 python3-venv python3-yaml sqlite3 logrotate uidmap prometheus qemu-system-x86 qemu-utils e2fsprogs openssh-client shellcheck

.PHONY: help deps venv image vm-image lint lint-fast rules unit unit-fast pythons ansible-tests faults vm-faults molecule check test test-serial demo bench standin-down clean

help: ## list the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-14s %s\n", $$1, $$2}'

deps: $(STAMPS)/deps ## install podman, runc, debootstrap and friends (apt, as root)
$(STAMPS)/deps:
	@mkdir -p $(STAMPS)
	@missing=""; for p in $(APT_PACKAGES); do dpkg-query -W -f='$${Status}' $$p 2>/dev/null | grep -q "ok installed" || missing="$$missing $$p"; done; \
	if [ -n "$$missing" ]; then \
	  echo "installing:$$missing"; \
	  if [ "$$(id -u)" != 0 ]; then echo "error: run as root to install:$$missing" >&2; exit 1; fi; \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $$missing >/dev/null; \
	fi
	@touch $@

venv: $(STAMPS)/venv ## create the pinned virtualenv (.venv)
$(STAMPS)/venv: requirements.txt constraints.txt
	@mkdir -p $(STAMPS)
	$(PYTHON) -m venv $(VENV)
	@# pip's own exit status decides (a filter in a pipe must not hide a failed install).
	$(BIN)/pip install -q --disable-pip-version-check -r requirements.txt -c constraints.txt
	$(BIN)/pip check
	$(BIN)/python -c "import ansible, molecule, pytest, yaml, requests"
	@touch $@

image: deps ## build the stand-in VPS base images, Debian 12 and a fresh Debian 13 (cached)
	NEO_STANDIN_SUITE=bookworm NEO_STANDIN_IMAGE=localhost/neo-vps-standin:debian12 bash standin/build-image.sh
	NEO_STANDIN_SUITE=trixie NEO_STANDIN_IMAGE=$(NEO_STANDIN_FRESH_IMAGE) bash standin/build-image.sh

vm-image: deps venv ## build the VM stand-in disk image for vm-faults (cached; the converge part uses podman)
	bash vm/build-image.sh

PY_SOURCES := scripts tests bench library action_plugins roles/hetzner_backups/action_plugins scripts/neo-db scripts/demo-engine scripts/readme-vars scripts/gen-role-schema scripts/build-pyz roles/neo_safeguards/files/neo-db

lint-fast: venv ## ruff, mypy, yamllint, bash -n on tests/molecule/*.sh: lint without ansible-lint (make check)
	$(BIN)/ruff check $(PY_SOURCES)
	$(BIN)/ruff format --check $(PY_SOURCES)
	$(BIN)/mypy
	$(BIN)/yamllint -s .
	for f in tests/stages.sh tests/pythons.sh tests/molecule/*.sh; do bash -n "$$f" || exit 1; done

lint: lint-fast deps ## lint-fast, ansible-lint (production profile), shellcheck (apt, make deps) on the test scripts
	$(BIN)/ansible-lint --profile production
	shellcheck tests/stages.sh tests/molecule/*.sh

rules: deps ## promtool: check the alert rules and run their unit tests (every alert firing and not firing)
	promtool check rules roles/neo_monitoring/files/neo_db_alerts.yml roles/neo_monitoring/files/neo_host_alerts.yml
	cd tests/promtool && promtool test rules *_test.yml

unit: venv deps ## pytest: neo-db on real SQLite files and processes (the whole unit suite)
	$(BIN)/pytest -m "not standin and not ansible and not vm" -q $(PYTEST_WORKERS)

unit-fast: venv deps ## the unit suite without its slow tests (tests/slow_tests.txt; make check)
	$(BIN)/pytest -m "not standin and not ansible and not vm and not slow" -q --durations=20 --junitxml=.stages/unit-fast.xml $(PYTEST_WORKERS)

pythons: venv ## the lifecycle, gate, import, restore and CLI tests with neo-db under every Python 3.10-3.13 found (pyenv, PATH); says which ran
	VENV=$(VENV) bash tests/pythons.sh

ansible-tests: venv ## pytest: playbooks on the controller (fake Hetzner API)
	$(BIN)/pytest -m ansible -q

faults: venv image ## pytest: crashes, power loss, corruption, a full disk, through the real unit on a stand-in
	$(BIN)/pytest -m standin -q

vm-faults: venv vm-image ## pytest: real power cuts (kill -9 of qemu) and a real NFS mount, in a QEMU VM
	$(BIN)/pytest -m vm -q -p no:cacheprovider --durations=0

molecule: venv image ## molecule test: site.yml on the stand-in VPS, verify = the confirmation checklist
	standin/with-fake-hetzner.sh -- $(BIN)/molecule test

check: lint-fast unit-fast ## the fast path for day-to-day work (under 3 min on two cores): lint-fast and unit-fast

# Each stage of `make test` runs as its own make, timed, its output in .stages/STAGE.log; the times
# are printed at the end. TEST_STAGES: which stages, in the table's order.
TEST_STAGES := lint rules unit pythons ansible-tests faults vm-faults molecule
# The stages run in parallel lanes (tests/stages.sh), each lane's stages in order. molecule, the
# longest stage, has a lane of its own from the start; the others are split in two lanes of about
# the same length. faults and molecule both make the stand-in images: standin/build-image.sh takes a
# lock per image, so the second waits and finds it cached; their containers have their own names.
# vm-faults (its own image, QEMU VMs, ephemeral ports) and ansible-tests (the fake API on ephemeral
# ports, molecule's hetzner scenario in a temp dir) share nothing with the others.
# NEO_TEST_LANES=1 (or `make test-serial`) runs TEST_STAGES serially, stopping at the first failure.
export NEO_TEST_LANES ?= lint rules unit pythons ansible-tests | molecule | vm-faults faults
# The unit and pythons suites keep PYTEST_WORKERS (-n auto) in the lanes: the CPU work is the same
# with one worker, which would only stretch lane 1 (the longest in CPU) and leave a core idle once
# the other lanes end. NEO_TEST_LANE_WORKERS="-n 1" sets their workers for the lanes only.
# Within CI's 90 minutes on two cores: one power cut per synchronous setting (`make vm-faults`
# alone keeps two; NEO_VM_CUTS=N overrides both).
test: ## every test, in parallel lanes; each stage's wall time and lane printed at the end
	NEO_VM_CUTS=$${NEO_VM_CUTS:-1} NEO_TEST_SETUP="venv deps" MAKE="$(MAKE)" bash tests/stages.sh $(TEST_STAGES)

test-serial: ## make test, one stage after the other (NEO_TEST_LANES=1), streaming each stage's output
	NEO_VM_CUTS=$${NEO_VM_CUTS:-1} NEO_TEST_LANES=1 NEO_TEST_SETUP="venv deps" MAKE="$(MAKE)" bash tests/stages.sh $(TEST_STAGES)

demo: venv image ## bring up neo-vps-local, provision it with site.yml, run one session
	standin/with-fake-hetzner.sh --state-file .cache/fake-hetzner.json -- bash standin/demo.sh

bench: venv image ## benchmarks: measured ratios, bench/results.json and .png (BENCH_DB_MB=1024)
	$(BIN)/pip install -q --disable-pip-version-check -r requirements-bench.txt -c constraints.txt
	$(BIN)/python bench/run.py

standin-down: ## remove the neo-vps-local container
	podman rm -f neo-vps-local >/dev/null 2>&1 || true

clean: standin-down ## remove the virtualenv and stamps
	rm -rf $(VENV) $(STAMPS) .pytest_cache .mypy_cache .ruff_cache .stages
