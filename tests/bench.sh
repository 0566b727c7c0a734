#!/usr/bin/env bash
# `make bench`: builds the release binaries and runs bulkhead-bench, which measures cold
# start, persistent exec and density of bulkhead sandboxes against bubblewrap on this machine
# (see bench/src/bin/bulkhead-bench.rs). Arguments go to the bench: --quick for a smoke run,
# --iterations N, --density N, --bwrap-density M, --threads T, --neighbour-rounds N,
# --only cold|density|neighbours (neighbours: tenant B's exec beside tenant A's attacks).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

# The baseline is bubblewrap; install it when it is missing (package registry only).
if ! command -v bwrap >/dev/null 2>&1; then
    if [ "$(id -u)" -eq 0 ] && command -v apt-get >/dev/null 2>&1; then
        echo "bench: installing bubblewrap for the baseline" >&2
        apt-get update -qq
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq bubblewrap >/dev/null
    else
        echo "bench: bwrap is missing and cannot be installed here (needs root and apt-get); no baseline" >&2
    fi
fi

cargo build --release --workspace
target_dir="${CARGO_TARGET_DIR:-target}"
"$target_dir/release/bulkhead-bench" "$@"
# The controller core: unlocking credentials (the KDF) and reading one once unlocked, each
# against a raw baseline; appending a turn to a 0 / 1,000 / 10,000-event transcript against a
# raw write + fsync (the cost must not grow with the transcript).
case " $* " in
  *" --only "*) ;;
  *)
    echo
    "$target_dir/release/bulkhead-bench-creds"
    echo
    "$target_dir/release/bulkhead-bench-sessions"
    echo
    "$target_dir/release/bulkhead-bench-agent"
    echo; "$target_dir/release/bulkhead-bench-egress"   # egress proxy vs direct loopback: MB/s, µs added
    echo; "$target_dir/release/bulkhead-bench-skills"   # skill run (sandbox + creds) vs a plain spawn
    echo; "$target_dir/release/bulkhead-bench-rpc"      # JSON-RPC over stdio vs the CLI per call
    # Memory at 100,000 chunks (10,000 with --quick): ingest, keyword/vector/hybrid latency
    # against a naive JSON-decode scan, and the memory of the loaded vectors.
    echo
    case " $* " in
      *" --quick "*) "$target_dir/release/bulkhead-bench-memory" --quick ;;
      *) "$target_dir/release/bulkhead-bench-memory" ;;
    esac
    ;;
esac
