# Two commands do the whole set-up on a fresh Debian/Ubuntu machine:
#   make demo   system packages, .venv, the verified demo of the seed's four operations, tutorials as HTML
#   make test   the same set-up plus test tools, then lint and the whole test suite
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
SYSTEM_PACKAGES := qemu-system-x86 qemu-utils graphviz
# The tiny guest OS (notebook 08, tests/test_guest.py): Debian's kernel and busybox; where a distribution has
# no such package (Ubuntu names its kernel otherwise, and keeps it root-only) the guest says so when used.
GUEST_PACKAGES := linux-image-amd64 busybox-static
TEST_SYSTEM_PACKAGES := $(SYSTEM_PACKAGES) chromium iproute2 openssl

.PHONY: demo test lab lint bench system test-system libvirt clean

demo: system $(VENV)/.installed
	$(BIN)/qblocknb demo
	$(BIN)/python tools/render_notebooks.py
	@echo "Executed tutorials, readable without Jupyter: build/notebooks/index.html"

test: test-system $(VENV)/.installed libvirt
	$(BIN)/ruff check qblocknb tests bench tools notebooks docs/make_images.py
	$(BIN)/ruff format --check qblocknb tests bench tools notebooks docs/make_images.py
	$(BIN)/pytest

lab: system $(VENV)/.installed
	$(BIN)/jupyter lab --notebook-dir=notebooks $(if $(filter 0,$(shell id -u)),--allow-root)

bench: system $(VENV)/.installed
	$(BIN)/python bench/run.py

# Many more random sequences than make test runs (SOAK_MINUTES, default 10); figures in build/soak.md and
# docs/reliability.md.
.PHONY: soak
soak: system $(VENV)/.installed
	$(BIN)/python tools/soak.py --write build/soak.md

system:
	@tools/system-packages.sh $(SYSTEM_PACKAGES)
	@tools/system-packages.sh --optional $(GUEST_PACKAGES)

# libvirtd and libvirt-python for tests/test_libvirt.py: set up as root; otherwise those tests say how and skip.
libvirt: $(VENV)/.installed
	@if [ "$$(id -u)" -eq 0 ]; then tools/libvirt-setup.sh && tools/libvirt-second-host.sh; \
	else echo "libvirt: not root, so tests/test_libvirt.py will be skipped; run: sudo tools/libvirt-setup.sh"; fi

test-system:
	@tools/system-packages.sh $(TEST_SYSTEM_PACKAGES)
	@tools/system-packages.sh --optional $(GUEST_PACKAGES)

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e ".[test]"
	touch $@

clean:
	rm -rf $(VENV) build .pytest_cache

# Extra QEMU versions beside Debian's 7.2 (which stays the default), under build/qemu/<version>/bin:
#   make qemu-versions    provision QEMU 10.0 (bookworm-backports) and 11.1 (sid); root only, idempotent
#   make test-matrix      the suite (not browser) on 7.2, 10.0 and 11.1; carries on past a failing version
#   make test-qemu-10.0   the suite on one of them
#   make compatibility    docs/compatibility.md: features probed on each version, and the suite on each
QEMU_VERSIONS := 10.0 11.1
MATRIX_PYTEST_ARGS ?= -m "not browser and not binder_image and not libvirt"

.PHONY: qemu-versions test-matrix compatibility test-binder-like $(addprefix test-qemu-,$(QEMU_VERSIONS))

qemu-versions:
	tools/qemu-versions.sh $(QEMU_VERSIONS)

$(addprefix test-qemu-,$(QEMU_VERSIONS)): test-qemu-%: test-system $(VENV)/.installed
	tools/qemu-versions.sh $*
	PATH=$(CURDIR)/build/qemu/$*/bin:$$PATH qemu-system-x86_64 --version | head -1
	PATH=$(CURDIR)/build/qemu/$*/bin:$$PATH $(BIN)/pytest $(MATRIX_PYTEST_ARGS)

test-matrix: test-system $(VENV)/.installed
	tools/qemu-versions.sh $(QEMU_VERSIONS)
	@summary=""; failed=0; \
	for v in 7.2 $(QEMU_VERSIONS); do \
		if [ $$v = 7.2 ]; then p=$$PATH; else p=$(CURDIR)/build/qemu/$$v/bin:$$PATH; fi; \
		used=$$(PATH=$$p qemu-system-x86_64 --version | head -1); \
		echo "=== test-matrix: QEMU $$v: $$used"; \
		start=$$(date +%s); \
		if PATH=$$p $(BIN)/pytest $(MATRIX_PYTEST_ARGS); then r=PASS; else r=FAIL; failed=1; fi; \
		summary="$$summary$$r  QEMU $$v  ($$used)  $$(( $$(date +%s) - start )) s\n"; \
	done; \
	echo "=== test-matrix summary:"; printf "%b" "$$summary"; exit $$failed

# docs/compatibility.md's table: each version's features probed from a real QEMU, and the suite on each.
compatibility: test-system $(VENV)/.installed
	tools/qemu-versions.sh $(QEMU_VERSIONS)
	$(BIN)/python tools/compatibility.py --suite --write docs/compatibility.md

# The notebooks as on Binder: run by a user who is not root and cannot open /dev/kvm (root makes the user).
test-binder-like: test-system
	tools/binder-like.sh

# The Binder image (binder/Dockerfile) built with podman, tagged qblocknb-binder: root only (podman, debootstrap;
# the base is cached in /var/lib/qblocknb). test-binder-image then runs it as Binder would: every notebook in it,
# the quickstart in Chromium against its JupyterLab, its peak memory and size (tests/test_binder_image.py).
.PHONY: binder-image test-binder-image
binder-image:
	tools/binder-image.sh

test-binder-image: test-system $(VENV)/.installed binder-image
	$(BIN)/pytest -m binder_image tests/test_binder_image.py -rA
