'use strict';
// Starts the switchboard-gateway binary on an ephemeral port and talks to its HTTP API.

const { spawn } = require('node:child_process');
const path = require('node:path');
const fs = require('node:fs');

const COMPAT_DIR = path.resolve(__dirname, '..');
const CONFIG_PATH = path.join(COMPAT_DIR, 'gateway.toml');
const DEFAULT_BIN = path.resolve(COMPAT_DIR, '../../target/debug/switchboard-gateway');
const API_KEY = 'test-api-key';
const STARTUP_DEADLINE_MS = 10_000;
const LISTENING_RE = /^switchboard-gateway listening on 127\.0\.0\.1:(\d+)$/;
// Printed before the listening line when --grpc-api-listen is given.
const GRPC_RE = /^switchboard-gateway gRPC API on (127\.0\.0\.1:\d+)$/;

function gatewayBinary() {
  const fromEnv = process.env.SWITCHBOARD_GATEWAY_BIN;
  return fromEnv ? path.resolve(fromEnv) : DEFAULT_BIN;
}

// Never leave a gateway behind: kill it when this test process exits or is interrupted.
const running = new Set();
const killAll = () => {
  for (const child of running) child.kill('SIGKILL');
};
process.on('exit', killAll);
for (const [signal, number] of [['SIGINT', 2], ['SIGTERM', 15]]) {
  process.once(signal, () => {
    killAll();
    process.exit(128 + number);
  });
}

/**
 * Spawns the gateway and resolves once it printed its listening line on stdout.
 * `args` are extra CLI arguments after the usual ones, e.g. ['--nats-url', url];
 * `config` another configuration file than gateway.toml.
 * Set COMPAT_GATEWAY_LOG=1 to forward the gateway's stderr to ours.
 */
async function startGateway({ args = [], config = CONFIG_PATH } = {}) {
  const bin = gatewayBinary();
  if (!fs.existsSync(bin)) {
    throw new Error(`gateway binary not found at ${bin} (set SWITCHBOARD_GATEWAY_BIN)`);
  }
  const child = spawn(bin, ['--config', config, '--listen', '127.0.0.1:0', ...args], {
    cwd: COMPAT_DIR,
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  running.add(child);
  const exited = new Promise((resolve) => child.once('exit', (code, signal) => {
    running.delete(child);
    resolve({ code, signal });
  }));

  let stderr = '';
  child.stderr.setEncoding('utf8');
  child.stderr.on('data', (chunk) => {
    stderr = (stderr + chunk).slice(-20_000);
    if (process.env.COMPAT_GATEWAY_LOG) process.stderr.write(chunk);
  });

  let stdout = '';
  const port = await new Promise((resolve, reject) => {
    let settled = false;
    const fail = (why) => {
      if (settled) return;
      settled = true;
      clearTimeout(timer);
      child.kill('SIGKILL');
      reject(new Error(`${why}\n--- gateway stdout ---\n${stdout}\n--- gateway stderr (tail) ---\n${stderr}`));
    };
    const timer = setTimeout(() => fail(`gateway did not print its listening line within ${STARTUP_DEADLINE_MS} ms`), STARTUP_DEADLINE_MS);
    child.once('error', (err) => fail(`failed to spawn ${bin}: ${err.message}`));
    child.once('exit', (code, signal) => fail(`gateway exited during start-up (code ${code}, signal ${signal})`));
    child.stdout.setEncoding('utf8');
    child.stdout.on('data', (chunk) => {
      if (settled) return;
      stdout += chunk;
      for (const line of stdout.split('\n')) {
        const m = LISTENING_RE.exec(line.trim());
        if (m) {
          settled = true;
          clearTimeout(timer);
          resolve(Number(m[1]));
          return;
        }
      }
    });
  });
  // Keep draining stdout so the gateway never blocks on a full pipe.
  child.stdout.resume();
  let stopping = false;
  exited.then(({ code, signal }) => {
    if (!stopping) {
      process.stderr.write(`\n!!! switchboard-gateway exited unexpectedly (code ${code}, signal ${signal})\n` +
        `--- gateway stderr (tail) ---\n${stderr.slice(-4_000)}\n`);
    }
  });

  const base = `http://127.0.0.1:${port}`;
  const grpc = stdout.split('\n').map((l) => GRPC_RE.exec(l.trim())).find(Boolean);
  return {
    port,
    /** host:port of the gRPC API, when started with --grpc-api-listen. */
    grpcAddress: grpc ? grpc[1] : undefined,
    wsUrl: `ws://127.0.0.1:${port}/connection/websocket`,
    httpUrl: base,
    stderr: () => stderr,
    /** POST /api/<method>; returns the parsed JSON reply body (throws on HTTP errors). */
    async api(method, params = {}) {
      const res = await apiRequest(base, method, params);
      if (res.status !== 200) {
        throw new Error(`API ${method} answered HTTP ${res.status}: ${res.text}`);
      }
      return res.json;
    },
    /** Like api() but returns the raw {status, json, text}; headers are fully controlled by the caller. */
    apiRaw(method, params = {}, headers) {
      return apiRequest(base, method, params, headers);
    },
    /** SIGKILL, no shutdown at all; resolves once the process is gone. */
    async kill() {
      stopping = true;
      if (child.exitCode === null && child.signalCode === null) child.kill('SIGKILL');
      await exited;
    },
    async stop() {
      stopping = true;
      if (child.exitCode !== null || child.signalCode !== null) return;
      child.kill('SIGTERM');
      const killer = setTimeout(() => child.kill('SIGKILL'), 5_000);
      await exited;
      clearTimeout(killer);
    },
  };
}

async function apiRequest(base, method, params, headers = { 'X-API-Key': API_KEY }) {
  const res = await fetch(`${base}/api/${method}`, {
    method: 'POST',
    headers: { 'Content-Type': 'application/json', ...headers },
    body: JSON.stringify(params),
  });
  const text = await res.text();
  let json;
  try {
    json = JSON.parse(text);
  } catch {
    json = undefined;
  }
  return { status: res.status, json, text };
}

/** Unwraps {result} from an API reply, failing with the error object if there is one. */
function result(reply) {
  if (!reply || reply.error || !reply.result) {
    throw new Error(`expected an API result, got ${JSON.stringify(reply)}`);
  }
  return reply.result;
}

module.exports = { startGateway, result, API_KEY, CONFIG_PATH };
