#!/usr/bin/env node
// A small client of `bulkhead serve --stdio` (JSON-RPC 2.0, one JSON object per line).
//
// Node 18+ built-ins only. `BulkheadClient` starts the server, sends requests (each a
// Promise; many may be in flight), and emits notifications (`run.event`, `hook.event`) as
// they arrive.
//
// Run as a script it is a demo: it creates a workspace, runs one agent turn (printing the
// streamed events), runs a command in the workspace's sandbox, lists the sessions and
// deletes the workspace; it exits 0 only if all of that worked. Settings come from the
// environment:
//
//   BULKHEAD_BIN        the bulkhead binary (default: `bulkhead` on PATH)
//   BULKHEAD_STATE_DIR  state directory (read by bulkhead itself)
//   BULKHEAD_MODEL      model for the turn, provider/model (default: the workspace's)
//   BULKHEAD_BASE_URL   base URL of the model server (e.g. a local or mock server)
//   ANTHROPIC_API_KEY, OPENAI_API_KEY, ...  read by bulkhead for the model call
'use strict';

const { spawn } = require('node:child_process');
const { EventEmitter } = require('node:events');
const readline = require('node:readline');

/** An error answer: `code`, `message` and `data` (with `exit_code`). */
class RpcError extends Error {
  constructor(error) {
    super(`${error.message} (code ${error.code})`);
    this.code = error.code;
    this.data = error.data;
  }
}

/** JSON-RPC over the stdio of a `bulkhead serve --stdio` child process. */
class BulkheadClient extends EventEmitter {
  constructor({ binary, args = [] } = {}) {
    super();
    binary = binary || process.env.BULKHEAD_BIN || 'bulkhead';
    this.proc = spawn(binary, [...args, 'serve', '--stdio'], {
      stdio: ['pipe', 'pipe', 'inherit'],
    });
    this.nextId = 1;
    this.pending = new Map(); // id -> {resolve, reject}
    this.exited = new Promise((resolve) => {
      this.proc.on('exit', (code) => resolve(code === null ? 128 : code));
      this.proc.on('error', (e) => {
        this._failAll(e);
        resolve(127);
      });
    });
    const rl = readline.createInterface({ input: this.proc.stdout });
    rl.on('line', (line) => this._onLine(line));
    rl.on('close', () => this._failAll(new Error('the server exited before answering')));
  }

  _onLine(line) {
    if (!line.trim()) return;
    const msg = JSON.parse(line);
    if ('id' in msg && ('result' in msg || 'error' in msg)) {
      const p = this.pending.get(msg.id);
      if (!p) return;
      this.pending.delete(msg.id);
      if ('error' in msg) p.reject(new RpcError(msg.error));
      else p.resolve(msg.result);
    } else if (msg.method) {
      this.emit('notification', msg.method, msg.params);
      this.emit(msg.method, msg.params);
    }
  }

  _failAll(err) {
    for (const p of this.pending.values()) p.reject(err);
    this.pending.clear();
  }

  _send(msg) {
    this.proc.stdin.write(JSON.stringify(msg) + '\n');
  }

  /** Sends a request; returns {id, result: Promise}. `id` is what `cancel` takes. */
  start(method, params = {}) {
    const id = this.nextId++;
    const result = new Promise((resolve, reject) => this.pending.set(id, { resolve, reject }));
    this._send({ jsonrpc: '2.0', id, method, params });
    return { id, result };
  }

  /** Sends a request and resolves with its result (rejects with RpcError). */
  call(method, params = {}) {
    return this.start(method, params).result;
  }

  /** Cancels an in-flight request (it then answers with error -32800). */
  cancel(id) {
    this._send({ jsonrpc: '2.0', method: '$/cancel', params: { id } });
  }

  /** Closes stdin (a graceful shutdown); resolves with the server's exit status. */
  close() {
    this.proc.stdin.end();
    return this.exited;
  }
}

async function demo() {
  const client = new BulkheadClient();
  client.on('run.event', ({ event }) => {
    const detail = String(event.text || event.name || event.outcome || '').trim().slice(0, 80);
    console.log(`  run.event ${event.type.padEnd(18)} ${detail}`);
  });
  client.on('hook.event', ({ event }) => console.log(`  hook.event ${event}`));
  const ws = `demo-js-${process.pid}`;
  let ok = false;
  try {
    const doc = await client.call('rpc.describe');
    console.log(`bulkhead JSON-RPC API ${doc.info.version}, ${doc.methods.length} methods`);
    await client.call('workspace.create', { id: ws });
    console.log('created workspace', ws);

    const params = { workspace: ws, message: 'Say hello in one short sentence.' };
    if (process.env.BULKHEAD_MODEL) params.model = process.env.BULKHEAD_MODEL;
    if (process.env.BULKHEAD_BASE_URL) params.base_url = process.env.BULKHEAD_BASE_URL;
    const result = await client.call('run', params);
    console.log(`answer (session ${result.session}, ${result.usage.input_tokens} in / ` +
      `${result.usage.output_tokens} out tokens): ${result.text.trim()}`);

    const r = await client.call('exec', {
      workspace: ws,
      argv: ['/bin/sh', '-c', 'echo hello from the sandbox; id -un'],
    });
    console.log(`exec exit ${r.exit_code}: ${r.stdout.trim().replace(/\n/g, ' | ')}`);
    if (r.exit_code !== 0) throw new Error(`exec failed: ${r.stderr}`);

    const sessions = await client.call('session.list', { workspace: ws });
    console.log('sessions:', sessions.map((s) => s.sid).join(', '));
    if (!sessions.some((s) => s.sid === result.session)) {
      throw new Error("the run's session is not listed");
    }
    ok = true;
  } catch (e) {
    console.error('error:', e.message);
  }
  try {
    await client.call('workspace.delete', { id: ws });
    console.log('deleted workspace', ws);
  } catch (e) {
    console.error('error deleting the workspace:', e.message);
    ok = false;
  }
  const status = await client.close();
  if (status !== 0) {
    console.error('the server exited with status', status);
    ok = false;
  }
  return ok ? 0 : 1;
}

module.exports = { BulkheadClient, RpcError };

if (require.main === module) {
  demo().then((code) => process.exit(code), (e) => {
    console.error('error:', e);
    process.exit(1);
  });
}
