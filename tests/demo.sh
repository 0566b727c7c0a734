#!/usr/bin/env bash
# make demo: two tenants, two sandboxes, each sees only its own files, processes and network.
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --release --workspace --quiet
B="$PWD/target/release/bulkhead"
STATE=$(mktemp -d "${TMPDIR:-/tmp}/bulkhead-demo.XXXXXX")
trap 'rm -rf "$STATE"' EXIT
bh() { "$B" --state-dir "$STATE" "$@"; }
say() { printf '\n\033[1m== %s\033[0m\n' "$*"; }

say "what this host gives (bulkhead doctor)"
bh doctor

say "two workspaces: acme and globex"
bh workspace create acme
bh workspace create globex --memory 256M --pids 64

say "acme writes a secret into its /workspace"
bh exec acme -- sh -c 'echo "acme-secret-$RANDOM" > /workspace/secret.txt; ls -l /workspace'

say "globex looks for it: its /workspace is its own, and acme's files are nowhere"
bh exec globex -- sh -c 'ls -la /workspace; find / -name secret.txt 2>/dev/null | head; echo "found: $(find / -name secret.txt 2>/dev/null | wc -l) files"'

say "processes: each sandbox sees only itself (pid 1 is its worker)"
bh exec acme -- sh -c 'ps -eo pid,user,comm 2>/dev/null || ls /proc | grep -E "^[0-9]+$"'

say "network: loopback only, no route out, no host services"
bh exec globex -- sh -c 'cat /proc/net/dev | tail -n +3 | cut -d: -f1; python3 -c "
import socket
for host in [(\"127.0.0.1\", 22), (\"::1\", 22)]:
    try:
        socket.create_connection(host, timeout=1); print(host, \"reachable?!\")
    except OSError as e:
        print(host, \"->\", e.strerror)
"'

say "identity and confinement, attested from inside"
bh exec acme -- sh -c 'id; grep -E "^(CapEff|NoNewPrivs|Seccomp):" /proc/self/status; hostname'

say "limits: globex has 256 MiB; a 1 GiB allocation is killed, exit 137"
set +e
bh exec globex -- python3 -c 'b = bytearray(1 << 30)'
echo "exit status: $?"
set -e

say "cleanup"
bh workspace delete acme
bh workspace delete globex
