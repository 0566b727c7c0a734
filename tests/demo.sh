#!/usr/bin/env bash
# make demo: two tenants, two sandboxes, each sees only its own files, processes and network;
# then a real agent turn: the model writes a file in /workspace with bash, reads it back and
# answers. Offline against the bundled mock model by default; against a real provider when
# ANTHROPIC_API_KEY, OPENAI_API_KEY or GEMINI_API_KEY is set.
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --release --workspace --quiet
B="$PWD/target/release/bulkhead"
STATE=$(mktemp -d "${TMPDIR:-/tmp}/bulkhead-demo.XXXXXX")
MOCK_PID=
cleanup() { [ -n "$MOCK_PID" ] && kill "$MOCK_PID" 2>/dev/null; rm -rf "$STATE"; }
trap cleanup EXIT
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

say "an agent turn: the model uses bash and read inside the sandbox, then answers"
PROMPT="Write the word hello into /workspace/hello.txt using bash, read the file back with the read tool, and tell me what it contains."
if [ -n "${ANTHROPIC_API_KEY:-}" ]; then
  MODEL=${BULKHEAD_DEMO_MODEL:-anthropic/claude-sonnet-4-5}
  bh workspace create agent --model "$MODEL"
  echo "(real provider: $MODEL)"
elif [ -n "${OPENAI_API_KEY:-}" ]; then
  MODEL=${BULKHEAD_DEMO_MODEL:-openai/gpt-4o-mini}
  bh workspace create agent --model "$MODEL"
  echo "(real provider: $MODEL)"
elif [ -n "${GEMINI_API_KEY:-}" ]; then
  MODEL=${BULKHEAD_DEMO_MODEL:-google/gemini-2.5-flash}
  bh workspace create agent --model "$MODEL"
  echo "(real provider: $MODEL)"
else
  # The bundled mock model on 127.0.0.1, replaying tests/demo-script.json.
  coproc MOCK { exec "$PWD/target/release/bulkhead-mock-llm" --script tests/demo-script.json --quiet; }
  MOCK_PID=$MOCK_PID
  read -r line <&"${MOCK[0]}"
  URL=${line#listening on }
  # Model calls go through the SSRF guard, which refuses loopback unless the operator allows
  # it: this host's operator (the demo) allows it for the local mock model.
  printf '[llm]\nallow_loopback = true\n' > "$STATE/config.toml"
  bh workspace create agent --model anthropic/claude-sonnet-4-5 --base-url "$URL"
  export ANTHROPIC_API_KEY=demo-key-for-the-mock
  echo "(offline: the mock model at $URL; set ANTHROPIC_API_KEY for a real one)"
fi
bh run agent "$PROMPT"
echo "on the host, the workspace's files/hello.txt holds: $(cat "$STATE/workspaces/agent/files/hello.txt")"
bh session list agent
bh workspace delete agent
