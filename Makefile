# Parley: `make run` starts the server with embedded defaults; `make test`
# installs what the tests need and runs every check CI runs.
SHELL := /bin/bash
GO ?= go
export GOFLAGS := -buildvcs=false

# command:Debian package, installed by `make deps` when the command is missing.
TEST_DEPS := chromium:chromium turnutils_uclient:coturn docker-compose:docker-compose ip:iproute2 unshare:util-linux

# Every Fuzz target in the tree, as dir:FuzzName.
FUZZ_TARGETS = $(shell grep -rlE '^func Fuzz' --include='*_test.go' . | while read f; do \
	for n in $$(grep -oE '^func (Fuzz[A-Za-z0-9_]+)' $$f | cut -d' ' -f2); do echo "$$(dirname $$f):$$n"; done; done)
FUZZTIME ?= 10s

.PHONY: run build test deps lint compile gotest fuzz compose bench

run:
	$(GO) run ./cmd/parley

build:
	$(GO) build -o bin/parley ./cmd/parley

test: deps lint compile gotest fuzz compose
	@echo "make test: all checks passed"

deps:
	@missing=""; for pair in $(TEST_DEPS); do \
		command -v "$${pair%%:*}" >/dev/null 2>&1 || missing="$$missing $${pair##*:}"; \
	done; \
	if [ -n "$$missing" ]; then \
		echo "installing test dependencies:$$missing"; \
		SUDO=""; [ "$$(id -u)" = 0 ] || SUDO=sudo; \
		$$SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq $$missing >/dev/null; \
	fi

lint:
	@out="$$(gofmt -l .)"; if [ -n "$$out" ]; then echo "gofmt needed:"; echo "$$out"; exit 1; fi
	$(GO) vet ./...

# Download modules and build every test binary while the network is there;
# the tests themselves run without it.
compile:
	$(GO) mod download
	$(GO) test -count=1 -run '^$$' ./... >/dev/null

gotest:
	@if .ci/netns true 2>/dev/null; then \
		.ci/netns $(GO) test -race -count=1 -timeout 15m ./...; \
	elif [ "$$CI" = "true" ]; then \
		echo "CI: cannot create a loopback-only network namespace (unshare -n needs root)"; exit 1; \
	else \
		echo "WARNING: no network namespace (run as root for one); media tests will see every interface"; \
		$(GO) test -race -count=1 -timeout 15m ./...; \
	fi

fuzz:
	@for t in $(FUZZ_TARGETS); do \
		echo "fuzz $${t#*:} ($(FUZZTIME))"; \
		log=$$(mktemp); \
		if ! $(GO) test -run '^$$' -fuzz "^$${t#*:}$$" -fuzztime $(FUZZTIME) "$${t%%:*}" >$$log 2>&1; then \
			cat $$log; rm -f $$log; echo "fuzz $${t#*:} failed (a crasher is saved under $${t%%:*}/testdata/fuzz)"; exit 1; \
		fi; rm -f $$log; \
	done

compose:
	docker-compose -f docker-compose.yml config -q

bench:
	$(GO) test -run '^$$' -bench . -benchmem ./sfu/
