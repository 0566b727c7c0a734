# bulkhead: the one entry point. CI (.ci/run) calls these same targets.
SHELL := /bin/bash
.SHELLFLAGS := -euo pipefail -c
CARGO ?= cargo
PREFIX ?= /usr/local

.PHONY: build release test lint bench demo install clean-test-state

build:
	$(CARGO) build --workspace --all-targets

release:
	$(CARGO) build --release --workspace

# Every test: unit tests of each crate, the launcher's kernel tests, the escape suite and
# the CLI tests (they drive the binaries built by `build`).
test: build
	$(CARGO) test --workspace --no-fail-fast

lint:
	$(CARGO) fmt --all -- --check
	$(CARGO) clippy --workspace --all-targets -- -D warnings

# A benchmark, not a test: prints medians and ratios against baselines run in the same
# script (bubblewrap, /bin/true). Installs bubblewrap if it is missing.
bench:
	bash tests/bench.sh

demo:
	bash tests/demo.sh

install: release
	install -d $(DESTDIR)$(PREFIX)/bin $(DESTDIR)$(PREFIX)/libexec/bulkhead
	install -m 0755 target/release/bulkhead $(DESTDIR)$(PREFIX)/bin/bulkhead
	install -m 0755 target/release/bulkhead-launch $(DESTDIR)$(PREFIX)/bin/bulkhead-launch
	install -m 0755 target/release/bulkhead-worker $(DESTDIR)$(PREFIX)/bin/bulkhead-worker

clean-test-state:
	rm -rf target/debug/test-state target/release/test-state
