# spire_py — the two commands a user needs are `make demo` and `make test`.
SHELL := /bin/bash
PY ?= python3
VENV ?= .venv
VPY := $(VENV)/bin/python
PROTO_DIR := src/spire_py/proto
PROTOS := $(shell find $(PROTO_DIR) -name '*.proto' 2>/dev/null | sort)

.PHONY: venv proto test unit integration demo bench clean fleet image

$(VENV)/.installed: pyproject.toml
	test -x $(VPY) || $(PY) -m venv $(VENV)
	$(VPY) -m pip install -q --upgrade pip
	$(VPY) -m pip install -q -e '.[test]'
	touch $@

venv: $(VENV)/.installed

# Regenerate the Python modules from our own .proto files (tests check they are fresh).
proto: venv
	$(VPY) -m spire_py.proto.generate

test: venv
	bash scripts/test.sh

# One suite alone, without the scratch databases (their DataStore cases are skipped).
unit: venv
	$(VPY) -m pytest -q -p no:cacheprovider tests/unit

integration: venv
	$(VPY) -m pytest -q -p no:cacheprovider tests/integration

demo: venv
	$(VPY) -m spire_py.demo

bench: venv
	$(VPY) -m benchmarks.run

# The Molecule fleet: every scenario (default, x509pop, sshpop, upgrade, ha) on real systemd
# hosts under rootful podman; scripts/fleet.sh installs what it needs (root only). Then the
# container image's smoke test (scripts/image-smoke.sh).
fleet:
	bash scripts/fleet.sh all
	bash scripts/image-smoke.sh

# The container image (Containerfile) with podman: localhost/spire_py:<version> and :latest.
image: venv
	bash scripts/image.sh build

clean:
	rm -rf $(VENV) build dist .pytest_cache
