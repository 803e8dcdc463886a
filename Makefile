# Parley. `make run` starts the server with embedded defaults; `make test`
# installs what the tests need and runs every check CI runs (.ci/run).
SHELL := /bin/bash
GO ?= go
export GOFLAGS := -buildvcs=false
export DEBIAN_FRONTEND := noninteractive

# command:Debian package, installed by `make deps` when the command is missing.
# redis-server runs in the multi-node tests (internal/redistest).
TEST_DEPS := chromium:chromium redis-server:redis-server turnutils_uclient:coturn \
	docker-compose:docker-compose ip:iproute2 unshare:util-linux

# The steps of `make test`, in order.
TEST_STEPS := deps lint compile gotest fuzz benchcheck compose

FUZZTIME ?= 10s
# gotestsum runs go test and reruns a failed top-level test once (never one
# that raced). The media tests share 2 cores with headless Chromium; a test
# that fails and then passes is listed at the end of the run as flaky.
GOTESTSUM_VERSION := v1.13.0
GOTESTSUM := $(shell $(GO) env GOPATH)/bin/gotestsum
GOTESTSUM_FLAGS ?= --format standard-quiet --rerun-fails=1 --rerun-fails-run-root-test \
	--rerun-fails-abort-on-data-race --rerun-fails-max-failures=8
GOTEST_TIMEOUT ?= 15m
# Packages one at a time: the media tests (40 pion peers, headless Chromium,
# coturn) are timing-sensitive and share 2 cores in CI.
GOTEST_FLAGS ?= -p 1

.PHONY: run build test $(TEST_STEPS) bench

run:
	$(GO) run ./cmd/parley

build:
	$(GO) build -o bin/parley ./cmd/parley

# Runs every step, stops at the first failure and always ends with one
# summary line.
test:
	@start=$$(date +%s); passed=""; \
	for step in $(TEST_STEPS); do \
		echo "==> make $$step"; \
		if ! $(MAKE) --no-print-directory $$step; then \
			echo "make test: FAILED at '$$step' after $$(( $$(date +%s) - start ))s (passed:$${passed:- none})"; \
			exit 1; \
		fi; \
		passed="$$passed $$step"; \
	done; \
	echo "make test: OK ($(TEST_STEPS)) in $$(( $$(date +%s) - start ))s"

# Install the Debian packages of missing commands (sudo only when not root).
deps:
	@missing=""; for pair in $(TEST_DEPS); do \
		command -v "$${pair%%:*}" >/dev/null 2>&1 || missing="$$missing $${pair##*:}"; \
	done; \
	if [ -z "$$missing" ]; then echo "test dependencies present"; exit 0; fi; \
	echo "installing test dependencies:$$missing"; \
	SUDO=""; [ "$$(id -u)" = 0 ] || SUDO="sudo"; \
	if ! { $$SUDO env DEBIAN_FRONTEND=noninteractive apt-get update -qq && \
	       $$SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $$missing >/dev/null; }; then \
		if [ "$$CI" = "true" ]; then echo "CI: could not install$$missing"; exit 1; fi; \
		echo "WARNING: could not install$$missing; the tests that need them will be skipped"; \
	fi

lint:
	@out="$$(gofmt -l .)"; if [ -n "$$out" ]; then echo "gofmt -l: these files need gofmt -w:"; echo "$$out"; exit 1; fi
	$(GO) vet ./...
	@# Linux is where Parley runs in production; the batched I/O and the
	@# receive stamps are Linux's. Other platforms build on stubs, which
	@# this keeps compiling (Windows has neither the Unix nor the Linux code).
	GOOS=windows $(GO) build ./...

# Download modules and build every test binary (with -race, as gotest runs
# them) while the network is there: the tests themselves run without it.
compile:
	$(GO) mod download
	@[ -x "$(GOTESTSUM)" ] && "$(GOTESTSUM)" --version | grep -q "$(GOTESTSUM_VERSION:v%=%)" || \
		{ echo "go install gotest.tools/gotestsum@$(GOTESTSUM_VERSION)"; $(GO) install gotest.tools/gotestsum@$(GOTESTSUM_VERSION); }
	$(GO) test -race -count=1 -run '^$$' ./... >/dev/null

# The tests run in a network namespace that has only loopback, so no media
# test can reach (or be confused by) another interface: as root with
# unshare -n, otherwise in an unprivileged user namespace (unshare -rn).
# Without either, CI fails and a developer gets a warning.
gotest:
	@ns=""; \
	if unshare -n true 2>/dev/null; then ns="unshare -n"; \
	elif unshare -rn true 2>/dev/null; then ns="unshare -rn"; fi; \
	report=$$(mktemp); trap 'rm -f "$$report"' EXIT; \
	run="$(GOTESTSUM) $(GOTESTSUM_FLAGS) --rerun-fails-report $$report --packages ./... -- -race -count=1 -timeout $(GOTEST_TIMEOUT) $(GOTEST_FLAGS)"; \
	if [ -n "$$ns" ]; then \
		echo "$$ns: go test -race ./... (loopback only)"; \
		$$ns sh -c 'ip link set lo up && exec "$$@"' netns $$run; rc=$$?; \
	elif [ "$$CI" = "true" ]; then \
		echo "CI: cannot create a loopback-only network namespace (unshare -n needs root or user namespaces)"; exit 1; \
	else \
		echo "WARNING: cannot create a loopback-only network namespace (run as root); media tests will see every interface"; \
		$$run; rc=$$?; \
	fi; \
	if [ -s "$$report" ]; then echo "FLAKY: these tests failed, and were run again:"; sed 's/^/  /' "$$report"; fi; \
	exit $$rc

# Every `func FuzzX` in a _test.go file, found afresh on each run, for
# FUZZTIME each. A failing input is saved under the package's testdata/fuzz:
# fix the bug and commit it as a regression case. A bare "context deadline
# exceeded" with no input written is Go 1.26's fuzzing coordinator racing
# its own -fuzztime deadline (golang/go#75804, fixed in Go 1.27), not a
# finding: that target runs again, at most twice, and is reported as FLAKY.
fuzz:
	@targets=$$(grep -rE --include='*_test.go' --exclude-dir=.git -o '^func Fuzz[A-Za-z0-9_]*' . | \
		sed -E 's#^(.*)/[^/]*_test\.go:func (Fuzz[A-Za-z0-9_]*)$$#\1:\2#' | sort -u); \
	if [ -z "$$targets" ]; then echo "no fuzz targets"; exit 0; fi; \
	log=$$(mktemp); trap 'rm -f "$$log"' EXIT; \
	for t in $$targets; do \
		pkg="$${t%%:*}"; name="$${t##*:}"; \
		echo "fuzz $$pkg $$name ($(FUZZTIME))"; \
		for try in 1 2 3; do \
			if $(GO) test -run '^$$' -fuzz "^$$name\$$" -fuzztime $(FUZZTIME) "$$pkg" >"$$log" 2>&1; then break; fi; \
			if [ $$try -lt 3 ] && grep -q 'context deadline exceeded' "$$log" && ! grep -q 'Failing input written to' "$$log"; then \
				echo "FLAKY: fuzz $$pkg $$name: coordinator deadline race (golang/go#75804), no input found; running it again"; continue; \
			fi; \
			cat "$$log"; echo "fuzz $$pkg $$name FAILED"; exit 1; \
		done; \
	done

compose:
	docker-compose -f docker-compose.yml config -q
	@echo "docker-compose.yml is valid"

# The benchmarks quoted in README.md (Performance). DataRoom100 runs a
# server process and 100 pion participants, LoopbackForward real pion peers
# through the engine (docs/performance.md), in the loopback-only namespace.
bench:
	$(GO) test -run '^$$' -bench . -skip LoopbackForward -benchmem ./sfu/
	.ci/netns $(GO) test -run '^$$' -bench LoopbackForward -benchtime 5000x -benchmem ./sfu/
	$(GO) test -run '^$$' -bench 'ChatFanout100' -benchtime 20000x ./rooms/
	.ci/netns $(GO) test -run '^$$' -bench 'DataRoom100' -benchtime 3000x ./signaling/

# Every benchmark once, briefly, so that none rots (figures come from
# make bench, not from here), and the zero-allocation tests without -race,
# where allocation counts are exact.
benchcheck:
	@log=$$(mktemp); trap 'rm -f "$$log"' EXIT; \
	if ! .ci/netns $(GO) test -run 'DoesNotAllocate' -bench . -benchtime 10x ./... >"$$log" 2>&1; then \
		cat "$$log"; echo "a benchmark or an allocation test failed"; exit 1; \
	fi; echo "every benchmark ran (10 iterations each); no allocation test failed"
