#!/usr/bin/env python3
"""A small client of `bulkhead serve --stdio` (JSON-RPC 2.0, one JSON object per line).

Standard library only. `BulkheadClient` starts the server, sends requests from any thread,
and hands notifications (`run.event`, `hook.event`) to a callback as they arrive.

Run as a script it is a demo: it creates a workspace, runs one agent turn (printing the
streamed events), runs a command in the workspace's sandbox, lists the sessions and deletes
the workspace; it exits 0 only if all of that worked. Settings come from the environment:

  BULKHEAD_BIN        the bulkhead binary (default: `bulkhead` on PATH)
  BULKHEAD_STATE_DIR  state directory (read by bulkhead itself)
  BULKHEAD_MODEL      model for the turn, provider/model (default: the workspace's)
  BULKHEAD_BASE_URL   base URL of the model server (e.g. a local or mock server)
  ANTHROPIC_API_KEY, OPENAI_API_KEY, ...  read by bulkhead for the model call
"""

import itertools
import json
import os
import subprocess
import sys
import threading


class RpcError(Exception):
    """An error answer: `code`, `message` and `data` (with `exit_code`)."""

    def __init__(self, error):
        self.code = error.get("code")
        self.data = error.get("data")
        super().__init__("%s (code %s)" % (error.get("message"), self.code))


class BulkheadClient:
    """JSON-RPC over the stdio of a `bulkhead serve --stdio` child process."""

    def __init__(self, binary=None, args=(), on_notification=None):
        binary = binary or os.environ.get("BULKHEAD_BIN") or "bulkhead"
        self.proc = subprocess.Popen(
            [binary, *args, "serve", "--stdio"],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
        )
        self.on_notification = on_notification or (lambda method, params: None)
        self._ids = itertools.count(1)
        self._lock = threading.Lock()  # guards _pending
        self._write_lock = threading.Lock()  # one line at a time on stdin
        self._pending = {}  # id -> [event, response]
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self):
        for line in self.proc.stdout:
            msg = json.loads(line)
            if "id" in msg and ("result" in msg or "error" in msg):
                with self._lock:
                    slot = self._pending.pop(msg["id"], None)
                if slot is not None:
                    slot[1] = msg
                    slot[0].set()
            elif "method" in msg:
                self.on_notification(msg["method"], msg.get("params"))
        # The server went away: wake every waiter.
        with self._lock:
            pending, self._pending = self._pending, {}
        for slot in pending.values():
            slot[0].set()

    def _send(self, msg):
        data = (json.dumps(msg) + "\n").encode()
        with self._write_lock:
            self.proc.stdin.write(data)
            self.proc.stdin.flush()

    def start(self, method, params=None):
        """Sends a request; returns its id (for `cancel`) and a waiter for `wait`."""
        rid = next(self._ids)
        slot = [threading.Event(), None]
        with self._lock:
            self._pending[rid] = slot
        self._send({"jsonrpc": "2.0", "id": rid, "method": method, "params": params or {}})
        return rid, slot

    @staticmethod
    def wait(slot, timeout=None):
        """The result of a started request; raises RpcError for an error answer."""
        if not slot[0].wait(timeout):
            raise TimeoutError("no answer in time")
        msg = slot[1]
        if msg is None:
            raise ConnectionError("the server exited before answering")
        if "error" in msg:
            raise RpcError(msg["error"])
        return msg["result"]

    def call(self, method, params=None, timeout=None):
        """Sends a request and waits for its result."""
        _, slot = self.start(method, params)
        return self.wait(slot, timeout)

    def cancel(self, rid):
        """Cancels an in-flight request (it then answers with error -32800)."""
        self._send({"jsonrpc": "2.0", "method": "$/cancel", "params": {"id": rid}})

    def close(self, timeout=30):
        """Closes stdin (a graceful shutdown) and waits for the server; returns its status."""
        try:
            self.proc.stdin.close()
        except OSError:
            pass
        return self.proc.wait(timeout)


def demo():
    def on_notification(method, params):
        if method == "run.event":
            ev = params["event"]
            detail = ev.get("text") or ev.get("name") or ev.get("outcome") or ""
            print("  run.event %-18s %s" % (ev["type"], str(detail).strip()[:80]), flush=True)
        elif method == "hook.event":
            print("  hook.event %s" % params["event"], flush=True)

    client = BulkheadClient(on_notification=on_notification)
    ws = "demo-py-%d" % os.getpid()
    ok = False
    try:
        doc = client.call("rpc.describe")
        print("bulkhead JSON-RPC API %s, %d methods" % (doc["info"]["version"], len(doc["methods"])))
        client.call("workspace.create", {"id": ws})
        print("created workspace", ws)

        params = {"workspace": ws, "message": "Say hello in one short sentence."}
        if os.environ.get("BULKHEAD_MODEL"):
            params["model"] = os.environ["BULKHEAD_MODEL"]
        if os.environ.get("BULKHEAD_BASE_URL"):
            params["base_url"] = os.environ["BULKHEAD_BASE_URL"]
        result = client.call("run", params, timeout=600)
        print("answer (session %s, %d in / %d out tokens): %s" % (
            result["session"], result["usage"]["input_tokens"],
            result["usage"]["output_tokens"], result["text"].strip()))

        r = client.call("exec", {"workspace": ws, "argv": ["/bin/sh", "-c", "echo hello from the sandbox; id -un"]}, timeout=120)
        print("exec exit %d: %s" % (r["exit_code"], r["stdout"].strip().replace("\n", " | ")))
        if r["exit_code"] != 0:
            raise RuntimeError("exec failed: " + r["stderr"])

        sessions = client.call("session.list", {"workspace": ws})
        print("sessions:", ", ".join(s["sid"] for s in sessions))
        if result["session"] not in [s["sid"] for s in sessions]:
            raise RuntimeError("the run's session is not listed")
        ok = True
    except Exception as e:  # noqa: BLE001 (a demo: report and fail)
        print("error:", e, file=sys.stderr)
    finally:
        try:
            client.call("workspace.delete", {"id": ws}, timeout=60)
            print("deleted workspace", ws)
        except Exception as e:  # noqa: BLE001
            print("error deleting the workspace:", e, file=sys.stderr)
            ok = False
        status = client.close()
        if status != 0:
            print("the server exited with status", status, file=sys.stderr)
            ok = False
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(demo())
