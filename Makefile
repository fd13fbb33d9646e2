# kflex — see README.md. `make demo` runs the main job, `make test` the tests.

GO          ?= go
STATICCHECK := honnef.co/go/tools/cmd/staticcheck@v0.8.2
BIN         := bin
# Packages whose tests run under the race detector: all of them (it needs cgo,
# which the race runtime uses; kflex itself has none).
RACE_PKGS   := ./...
FUZZTIME    ?= 30s
STRESS_COUNT ?= 20
WINDOW_COUNT ?= 5

.PHONY: all build demo examples test test-kernel bench fuzz stress conformance lint clean

all: build

build:
	$(GO) build -o $(BIN)/kflex ./cmd/kflex
	$(GO) build -o $(BIN)/kflex-bpf-conformance ./cmd/kflex-bpf-conformance

demo: build
	$(BIN)/kflex demo

# The C extensions of examples/ (examples/NAME/bpf/NAME.c), built for BPF with
# include/kflex.h: kflex serve loads bin/examples/NAME.o. CI installs clang-19.
CLANG    ?= clang-19
EXAMPLES := $(BIN)/examples/hashtab.o
examples: $(EXAMPLES)

.SECONDEXPANSION:
$(BIN)/examples/%.o: examples/$$*/bpf/$$*.c include/kflex.h
	@mkdir -p $(@D)
	$(CLANG) -O2 -g -target bpf -mcpu=v4 -Wall -I include -c $< -o $@

# The tests: vet and format first, then every package with the race detector.
# A test that needs a kernel feature asks the host with a raw probe that runs no
# kflex code (internal/hostprobe): where the host refuses, it skips naming the
# call and the errno; where the host offers, it runs, and kflex's failure is its
# failure. The last lines say, per feature, whether its tests ran or skipped.
# -count=1: what the kernel offers is not part of the test cache key.
FEATURE_LOG := $(BIN)/kernel-features.log
test: lint
	@mkdir -p $(BIN) && rm -f $(FEATURE_LOG)
	@status=0; \
	KFLEX_FEATURE_LOG=$(abspath $(FEATURE_LOG)) CGO_ENABLED=1 $(GO) test -race -count=1 -timeout 10m $(RACE_PKGS) || status=1; \
	echo "# the interpreter's trace hook: every register of every generated run checked against the verifier's analysis"; \
	$(GO) test -tags kflextrace -count=1 ./jit/interp ./verifier || status=1; \
	echo "# the lock's fault points: a child killed at every step of the protocol"; \
	$(GO) test -race -tags kflexfault -count=1 -run 'Kill|Killed|Reap|NotRecoverable|DeadSuccessor|Granter' ./mcs || status=1; \
	echo "# kills aimed at the MCS window, on the lock the runtime's executors are cancelled on"; \
	$(GO) test -tags kflexfault -count=1 -run 'TestKillsInSwapWindow' ./stress || status=1; \
	echo "# a live successor stopped at a fault point: the runtime's holder waits for its link"; \
	$(GO) test -race -tags kflexfault -count=1 -run 'TestHolderCancelledAwaitingLink|TestRuntimeKilledInBytecodeLock' ./serve || status=1; \
	echo "# a kernel holder whose successor died before linking (on an arena)"; \
	KFLEX_FEATURE_LOG=$(abspath $(FEATURE_LOG)) $(GO) test -race -tags kflexfault -count=1 -run 'TestKernelStuckDeadSuccessor' ./kernel || status=1; \
	$(GO) run ./internal/hostprobe/summary $(FEATURE_LOG) >$(BIN)/kernel-features.txt || status=1; \
	cat $(BIN)/kernel-features.txt; \
	if [ "$(KFLEX_VM)" = 0 ]; then \
		echo "# KFLEX_VM=0: the arena tests that skipped here do not run in a VM either"; \
	elif grep -q '^kernel feature BPF arena: SKIPPED' $(BIN)/kernel-features.txt; then \
		echo "# this host refuses BPF arenas: the tests that need them, in a VM that offers them (make test-kernel)"; \
		KFLEX_VM_PKGS='$(VM_ARENA_TESTS)' GO=$(GO) internal/vmtest/run.sh || status=1; \
	fi; \
	exit $$status

# The tests that need BPF arenas, where this host refuses them: Debian's
# backports kernel (Linux 6.12) in qemu, KVM where it boots, TCG otherwise, with
# the test binaries in its initramfs; fails if a test fails or if the VM's
# kernel refuses (or a test skips) BPF programs or arenas. make test runs
# VM_ARENA_TESTS this way when the host refused arenas; make test-kernel runs
# every test of the packages that need the kernel. Downloads are cached in
# bin/vm. KFLEX_VM=0 make test leaves the VM out (the arena tests then only
# skip, as the summary says). KFLEX_VM_PKGS, KFLEX_VM_RUN and the others: see
# internal/vmtest/run.sh.
VM_ARENA_TESTS := ./kernel@kflexfault ./internal/sys/arena ./serve:TestMixedContentionKernel|TestClientsOnArena \
	./cmd/kflex:TestServe|TestBench ./stress:TestKillsKernel
test-kernel:
	GO=$(GO) internal/vmtest/run.sh

lint:
	@out=$$(gofmt -l $$(git ls-files '*.go')); if [ -n "$$out" ]; then echo "gofmt needed:"; echo "$$out"; exit 1; fi
	$(GO) vet ./...
	GOARCH=arm64 $(GO) vet ./...   # other architectures build, with the interpreter
	$(GO) vet -tags kflextrace ./jit/interp ./verifier
	$(GO) vet -tags kflexfault ./mcs ./serve ./stress
	$(GO) run $(STATICCHECK) ./...

# Benchmarks, with the robust pthread mutex baseline built from C and run in the
# same invocation: absolute times vary with the machine; compare the ratios.
# glibc's rseq is turned off so that the test binary's threads (cgo, through
# testify) can register kflex's rseq areas.
bench: $(BIN)/robust-pthread
	$(BIN)/robust-pthread uncontended 20000000
	$(BIN)/robust-pthread procs 2 2
	$(BIN)/robust-pthread threads 2 2
	$(BIN)/robust-pthread threads 16 2
	$(GO) run ./cmd/kflex bench --robust $(BIN)/robust-pthread recovery   # SIGKILL of a holder -> next waiter, kflex and glibc
	GLIBC_TUNABLES=glibc.pthread.rseq=0 $(GO) test -run '^$$' -bench . -count 3 ./mcs ./heap ./jit/interp ./jit ./verifier ./serve ./kernel

$(BIN)/robust-pthread: bench/robustmutex/robust.c
	@mkdir -p $(BIN)
	cc -O2 -Wall -pthread -o $@ $<

# Each fuzz target for FUZZTIME (go test fuzzes one target per run). The kernel
# differential target paces its program loads (see kernel/diff_test.go).
# FuzzCrossProcess runs real worker processes and kills them; with
# -tags kflexfault its kills also aim at mcs's fault points.
fuzz:
	$(GO) test -run '^$$' -fuzz '^FuzzParseHeader$$' -fuzztime $(FUZZTIME) ./heap
	$(GO) test -run '^$$' -fuzz '^FuzzHeapInspect$$' -fuzztime $(FUZZTIME) ./heap
	$(GO) test -run '^$$' -fuzz '^FuzzTranslate$$' -fuzztime $(FUZZTIME) ./translate
	$(GO) test -run '^$$' -fuzz '^FuzzRoundTrip$$' -fuzztime $(FUZZTIME) ./bytecode
	$(GO) test -run '^$$' -fuzz '^FuzzRead$$' -fuzztime $(FUZZTIME) ./object
	$(GO) test -run '^$$' -fuzz '^FuzzInterp$$' -fuzztime $(FUZZTIME) ./jit/interp
	$(GO) test -run '^$$' -fuzz '^FuzzDifferential$$' -fuzztime $(FUZZTIME) ./jit
	$(GO) test -tags kflextrace -run '^$$' -fuzz '^FuzzVerifier$$' -fuzztime $(FUZZTIME) ./verifier
	$(GO) test -run '^$$' -fuzz '^FuzzSandboxGames$$' -fuzztime $(FUZZTIME) ./serve
	$(GO) test -run '^$$' -fuzz '^FuzzProtocol$$' -fuzztime $(FUZZTIME) ./serve
	$(GO) test -run '^$$' -fuzz '^FuzzDecode$$' -fuzztime $(FUZZTIME) ./internal/sys/wire
	$(GO) test -run '^$$' -fuzz '^FuzzKernelDiff$$' -fuzztime $(FUZZTIME) -parallel 1 ./kernel
	$(GO) test -run '^$$' -fuzz '^FuzzCrossProcess$$' -fuzztime $(FUZZTIME) ./stress
	$(GO) test -tags kflexfault -run '^$$' -fuzz '^FuzzCrossProcess$$' -fuzztime $(FUZZTIME) ./stress

# Longer runs of the multi-process and hammer tests, then kflex stress: 10,000
# SIGKILLs of 4 worker processes (STRESS_KILLS=N to change), recovery checked.
stress: build
	CGO_ENABLED=1 $(GO) test -race -count $(STRESS_COUNT) -timeout 60m \
		-run 'TestMultiProcess|TestHammer|TestFIFO|TestKernelMarksDeath|TestAllocHammer|TestListAcrossViews|TestMixedContention|TestKernelLock|TestClientsOnArena|TestLayoutContract|TestKillsKernel' \
		./mcs ./heap ./userspace ./serve ./kernel ./stress
	# every kill in the MCS window (runtime executors cancelled on the same
	# lock), and the cross-process corpus with its fault points armed
	$(GO) test -tags kflexfault -count $(WINDOW_COUNT) -timeout 30m \
		-run 'TestKillsInSwapWindow|FuzzCrossProcess' ./stress
	$(BIN)/kflex stress --procs 4 --threads 4 --locks 4 --kills $${STRESS_KILLS:-10000} --json
	# kills also at the lock's fault points (the MCS window among them): a
	# build with -tags kflexfault
	$(GO) build -tags kflexfault -o $(BIN)/kflex-fault ./cmd/kflex
	$(BIN)/kflex-fault stress --procs 4 --threads 4 --locks 4 --kills $${STRESS_FAULT_KILLS:-3000} --json

# The public bpf_conformance suite's test files through the plugin, both
# engines: make conformance BPF_CONFORMANCE_TESTS=path/to/bpf_conformance/tests
conformance:
	@test -n "$(BPF_CONFORMANCE_TESTS)" || { echo "set BPF_CONFORMANCE_TESTS to bpf_conformance's tests directory"; exit 2; }
	KFLEX_BPF_CONFORMANCE_TESTS=$(abspath $(BPF_CONFORMANCE_TESTS)) $(GO) test -count=1 -run TestThirdPartySuite -v ./cmd/kflex-bpf-conformance | grep -E '^(---|ok|FAIL)|files:|FAIL'

clean:
	rm -rf $(BIN)
