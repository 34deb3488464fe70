# bpfwatch: `make run` (set up, build, live event stream) and `make test`.
# Every target installs what it lacks first, so both work on a fresh Debian
# machine and are cheap to repeat.

SHELL      := /bin/bash
PYTHON     ?= python3
VENV       ?= .venv
VPY        := $(VENV)/bin/python
BPF_DIR    := src/bpfwatch/bpf
BUILD_DIR  := build/bpf
VMLINUX    := $(BUILD_DIR)/vmlinux.h
BPF_SRCS   := $(wildcard $(BPF_DIR)/*.bpf.c)
BPF_OBJS   := $(BPF_SRCS:.bpf.c=.bpf.o)
BPF_HDRS   := $(wildcard $(BPF_DIR)/*.h)
TEST_BPF_SRCS := $(wildcard tests/bpf/*.bpf.c)
TEST_BPF_OBJS := $(patsubst tests/bpf/%.bpf.c,build/testbpf/%.bpf.o,$(TEST_BPF_SRCS))
ARCH       := $(shell uname -m | sed -e 's/x86_64/x86/' -e 's/aarch64/arm64/')
CLANG      ?= clang
CFLAGS_BPF := -g -O2 -target bpf -D__TARGET_ARCH_$(ARCH) -I$(BUILD_DIR) -I$(BPF_DIR) -Wall -Werror
STAMP_SYS  := build/.system-deps
STAMP_TEST := build/.test-deps
STAMP_BENCH := build/.bench-deps
STAMP_VENV := $(VENV)/.installed
ARGS       ?=

.PHONY: all deps venv bpf testbpf run test test-peers test-kernel dist deb test-install fuzz lint bench fleet-demo man clean distclean

all: bpf venv

$(STAMP_SYS): scripts/setup-system.sh
	@bash scripts/setup-system.sh
	@mkdir -p build && touch $@

$(STAMP_TEST): scripts/setup-system.sh | $(STAMP_SYS)
	@bash scripts/setup-system.sh --test
	@touch $@

$(STAMP_BENCH): scripts/setup-system.sh | $(STAMP_SYS)
	@bash scripts/setup-system.sh --bench
	@touch $@

deps: $(STAMP_SYS)

$(VMLINUX): | $(STAMP_SYS)
	@mkdir -p $(BUILD_DIR)
	bpftool btf dump file /sys/kernel/btf/vmlinux format c > $@.tmp
	@mv $@.tmp $@

$(BPF_DIR)/%.bpf.o: $(BPF_DIR)/%.bpf.c $(BPF_HDRS) $(VMLINUX)
	$(CLANG) $(CFLAGS_BPF) -c $< -o $@.tmp
	@llvm-strip -g $@.tmp 2>/dev/null || true
	@mv $@.tmp $@

bpf: $(BPF_OBJS)

# objects the program-manager tests load (never installed)
build/testbpf/%.bpf.o: tests/bpf/%.bpf.c $(wildcard tests/bpf/*.bpf.h) $(VMLINUX)
	@mkdir -p build/testbpf
	$(CLANG) $(CFLAGS_BPF) -c $< -o $@

testbpf: $(TEST_BPF_OBJS)

$(STAMP_VENV): pyproject.toml | $(STAMP_SYS)
	@test -x $(VPY) || $(PYTHON) -m venv $(VENV)
	$(VPY) -m pip install -q --upgrade pip
	$(VPY) -m pip install -q -e '.[test,fleet]'
	@touch $@

venv: $(STAMP_VENV)

run: bpf venv
	$(VENV)/bin/bpfwatch trace $(ARGS)

test: bpf testbpf venv $(STAMP_TEST)
	$(VENV)/bin/ruff check src tests bench scripts
	$(VPY) -m pytest $(ARGS)

# the differential suite with its larger workloads (make -j2 of 200 files, git, tar of /usr/share/doc)
test-peers: bpf testbpf venv $(STAMP_TEST)
	BPFWATCH_PEERS_FULL=1 $(VPY) -m pytest -q tests/peers $(ARGS)

# the attack, long: generated hostile input at every entry point (hypothesis: CLI options and values,
# configs, rules, diagnose requests, filters, map values, damaged capture directories) and mutated
# BPF objects. `make test` runs the same tests with few examples.
FUZZ_EXAMPLES ?= 500
FUZZ_SEED     ?= $(shell date +%s)
fuzz: bpf testbpf venv $(STAMP_TEST)
	BPFWATCH_FUZZ_EXAMPLES=$(FUZZ_EXAMPLES) $(VPY) -m pytest -q -p no:cacheprovider --hypothesis-show-statistics \
		--hypothesis-seed=$(FUZZ_SEED) tests/test_hostile_cli.py tests/test_hostile_inputs.py \
		tests/test_hostile_capture.py tests/test_diagnose_hostile.py tests/test_agent_config.py $(ARGS)
	$(VPY) tests/fuzz_validator.py $(FUZZ_SEED) 20000

lint: venv
	$(VENV)/bin/ruff check src tests bench scripts

bench: bpf testbpf venv $(STAMP_BENCH)
	$(VPY) bench/run_all.py

# the kernel tests on a Debian kernel in QEMU (docs/kernels.md): make test-kernel [KERNEL=6.1] [SUITE=smoke]
KERNEL ?= 6.1
SUITE  ?= full
test-kernel: bpf testbpf venv $(STAMP_TEST)
	KERNEL=$(KERNEL) SUITE=$(SUITE) bash scripts/test-kernel.sh

# a wheel and an sdist with the compiled CO-RE objects (x86_64), and a Debian package (docs/install.md)
WHEEL_PLAT := manylinux_2_17_x86_64
dist: bpf venv
	rm -rf dist build/lib build/bdist.*
	$(VENV)/bin/pip install -q build==1.6.1
	$(VPY) -m build --outdir dist -C--build-option=--plat-name=$(WHEEL_PLAT) .

deb: dist
	bash scripts/build-deb.sh

# both, installed on fresh Debian roots (mmdebstrap) and used for real
test-install: deb
	bash scripts/test-install.sh

# the man page, generated from the parser (tests/test_terminal.py holds it current)
man: venv
	$(VPY) -m bpfwatch.cli.manpage > docs/bpfwatch.1

# a one-host fleet on loopback: JetStream server, agent, collector, queries (docs/fleet.md)
fleet-demo: bpf venv $(STAMP_TEST)
	bash scripts/fleet-demo.sh

clean:
	rm -f $(BPF_DIR)/*.bpf.o $(BPF_DIR)/*.tmp
	rm -rf build

distclean: clean
	rm -rf $(VENV) src/*.egg-info
