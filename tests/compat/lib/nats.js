'use strict';
// Starts a real nats-server with JetStream on an ephemeral port, storing into a fresh temp dir.

const { spawn } = require('node:child_process');
const fs = require('node:fs');
const os = require('node:os');
const path = require('node:path');

const STARTUP_DEADLINE_MS = 10_000;
const LISTENING_RE = /Listening for client connections on 127\.0\.0\.1:(\d+)/;
const READY_RE = /Server is ready/;

// Never leave a nats-server or its store behind when this test process exits.
const running = new Set(); // { child, dir }
const cleanUp = (entry) => {
  if (entry.child.exitCode === null && entry.child.signalCode === null) entry.child.kill('SIGKILL');
  fs.rmSync(entry.dir, { recursive: true, force: true });
  running.delete(entry);
};
process.on('exit', () => {
  for (const entry of [...running]) cleanUp(entry);
});
for (const [signal, number] of [['SIGINT', 2], ['SIGTERM', 15]]) {
  process.once(signal, () => {
    for (const entry of [...running]) cleanUp(entry);
    process.exit(128 + number);
  });
}

/**
 * Spawns `nats-server -a 127.0.0.1 -p -1 -js -sd <tmp>` and resolves once it logged both its
 * client port and "Server is ready" (nats-server logs to stderr). Resolves with
 * { url, port, stderr(), stop() }; stop() SIGKILLs it and removes its store.
 * Set COMPAT_NATS_LOG=1 to forward its log to our stderr.
 */
async function startNats() {
  const bin = process.env.NATS_SERVER_BIN || 'nats-server';
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'compat-nats-'));
  const child = spawn(bin, ['-a', '127.0.0.1', '-p', '-1', '-js', '-sd', dir], {
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  const entry = { child, dir };
  running.add(entry);
  const exited = new Promise((resolve) => child.once('exit', (code, signal) => resolve({ code, signal })));

  let log = '';
  const onChunk = (chunk) => {
    log = (log + chunk).slice(-20_000);
    if (process.env.COMPAT_NATS_LOG) process.stderr.write(chunk);
  };
  child.stdout.setEncoding('utf8');
  child.stderr.setEncoding('utf8');
  child.stdout.on('data', onChunk);

  const port = await new Promise((resolve, reject) => {
    let seen = '';
    let port;
    let settled = false;
    const fail = (why) => {
      if (settled) return;
      settled = true;
      clearTimeout(timer);
      cleanUp(entry);
      reject(new Error(`${why}\n--- nats-server log (tail) ---\n${log}`));
    };
    const timer = setTimeout(() => fail(`nats-server was not ready within ${STARTUP_DEADLINE_MS} ms`), STARTUP_DEADLINE_MS);
    child.once('error', (err) => fail(`failed to spawn ${bin}: ${err.message}`));
    child.once('exit', (code, signal) => fail(`nats-server exited during start-up (code ${code}, signal ${signal})`));
    child.stderr.on('data', (chunk) => {
      onChunk(chunk);
      if (settled) return;
      seen += chunk;
      const m = LISTENING_RE.exec(seen);
      if (m) port = Number(m[1]);
      if (port !== undefined && READY_RE.test(seen)) {
        settled = true;
        clearTimeout(timer);
        resolve(port);
      }
    });
  });

  return {
    port,
    url: `nats://127.0.0.1:${port}`,
    stderr: () => log,
    async stop() {
      if (child.exitCode === null && child.signalCode === null) {
        child.kill('SIGKILL');
        await exited;
      }
      cleanUp(entry);
    },
  };
}

module.exports = { startNats };
