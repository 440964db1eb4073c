# Two commands do the whole set-up on a fresh Debian/Ubuntu machine:
#   make demo   system packages, .venv, the verified demo of the seed's four operations, tutorials as HTML
#   make test   the same set-up plus test tools, then lint and the whole test suite
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
SYSTEM_PACKAGES := qemu-system-x86 qemu-utils graphviz
TEST_SYSTEM_PACKAGES := $(SYSTEM_PACKAGES) chromium iproute2 openssl

.PHONY: demo test lab lint bench system test-system clean

demo: system $(VENV)/.installed
	$(BIN)/qblocknb demo
	$(BIN)/python tools/render_notebooks.py
	@echo "Executed tutorials, readable without Jupyter: build/notebooks/index.html"

test: test-system $(VENV)/.installed
	$(BIN)/ruff check qblocknb tests bench tools notebooks docs/make_images.py
	$(BIN)/ruff format --check qblocknb tests bench tools notebooks docs/make_images.py
	$(BIN)/pytest

lab: system $(VENV)/.installed
	$(BIN)/jupyter lab --notebook-dir=notebooks $(if $(filter 0,$(shell id -u)),--allow-root)

bench: system $(VENV)/.installed
	$(BIN)/python bench/run.py

system:
	@tools/system-packages.sh $(SYSTEM_PACKAGES)

test-system:
	@tools/system-packages.sh $(TEST_SYSTEM_PACKAGES)

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e ".[test]"
	touch $@

clean:
	rm -rf $(VENV) build .pytest_cache
