'use strict';
// The HTTP streams through the load balancers docs/operations.md describes, configured as
// it says: HAProxy (as the local cluster runs it) and nginx (proxy_http_version 1.1, long
// read timeouts, its buffering left at the default; the gateway's streams carry
// `X-Accel-Buffering: no` as well). Each stream connects, stays the same connection
// across pings answered through the proxy, and receives a publication.

const { describe, it, before, after } = require('node:test');
const assert = require('node:assert/strict');
const { spawn, execFileSync } = require('node:child_process');
const fs = require('node:fs');
const net = require('node:net');
const os = require('node:os');
const path = require('node:path');
const { startGateway, result } = require('../lib/gateway');
const { connect, uniqueChannel } = require('../lib/clients');
const { waitEvent } = require('../lib/events');
const { STREAMS, newStreamClient } = require('../lib/streams');

const STARTUP_DEADLINE_MS = 10_000;

function binary(name) {
  for (const dir of ['/usr/sbin', '/usr/bin', '/usr/local/sbin']) {
    const candidate = path.join(dir, name);
    if (fs.existsSync(candidate)) return candidate;
  }
  throw new Error(`${name} not installed: apt-get install ${name}`);
}

async function freePort() {
  const server = net.createServer();
  await new Promise((resolve) => server.listen(0, '127.0.0.1', resolve));
  const { port } = server.address();
  await new Promise((resolve) => server.close(resolve));
  return port;
}

async function listening(port, proc, what) {
  const deadline = Date.now() + STARTUP_DEADLINE_MS;
  while (Date.now() < deadline) {
    if (proc.exitCode !== null) throw new Error(`${what} exited (${proc.exitCode})`);
    const open = await new Promise((resolve) => {
      const socket = net.connect({ host: '127.0.0.1', port }, () => { socket.destroy(); resolve(true); });
      socket.on('error', () => resolve(false));
    });
    if (open) return;
    await new Promise((resolve) => setTimeout(resolve, 50));
  }
  throw new Error(`${what} did not listen on ${port} in time`);
}

/** Starts `argv` and resolves once it listens on `port`; killed by `stop()`. */
async function run(argv, port, what) {
  const proc = spawn(argv[0], argv.slice(1), { stdio: ['ignore', 'ignore', 'pipe'] });
  let stderr = '';
  proc.stderr.on('data', (d) => { stderr += d; });
  try {
    await listening(port, proc, what);
  } catch (err) {
    proc.kill('SIGKILL');
    throw new Error(`${err.message}\n${stderr}`);
  }
  return { port, stop: () => proc.kill('SIGKILL') };
}

const haproxyConfig = (port, gwPort) => `
defaults
    mode http
    timeout connect 2s
    timeout client 60s
    timeout server 60s
    timeout tunnel 1h
    timeout http-request 10s
frontend front
    bind 127.0.0.1:${port}
    default_backend gateways
backend gateways
    server gw 127.0.0.1:${gwPort}
`;

const nginxConfig = (dir, port, gwPort) => `
pid ${dir}/nginx.pid;
error_log ${dir}/error.log;
events {}
http {
    access_log off;
    client_body_temp_path ${dir}/body;
    proxy_temp_path ${dir}/proxy;
    fastcgi_temp_path ${dir}/fastcgi;
    uwsgi_temp_path ${dir}/uwsgi;
    scgi_temp_path ${dir}/scgi;
    server {
        listen 127.0.0.1:${port};
        location / {
            proxy_pass http://127.0.0.1:${gwPort};
            proxy_http_version 1.1;
            proxy_read_timeout 3600s;
            proxy_send_timeout 3600s;
        }
    }
}
`;

let gw;
let dir;
const proxies = {};
before(async () => {
  // Pings every second, each answered through the proxy.
  gw = await startGateway({ args: ['--ping-interval', '1', '--pong-timeout', '2'] });
  dir = fs.mkdtempSync(path.join(os.tmpdir(), 'switchboard-proxies-'));
  const haproxyPort = await freePort();
  fs.writeFileSync(path.join(dir, 'haproxy.cfg'), haproxyConfig(haproxyPort, gw.port));
  proxies.haproxy = await run([binary('haproxy'), '-db', '-f', path.join(dir, 'haproxy.cfg')], haproxyPort, 'haproxy');
  const nginxPort = await freePort();
  fs.writeFileSync(path.join(dir, 'nginx.conf'), nginxConfig(dir, nginxPort, gw.port));
  execFileSync(binary('nginx'), ['-t', '-q', '-p', dir, '-c', path.join(dir, 'nginx.conf')], { stdio: 'pipe' });
  proxies.nginx = await run([binary('nginx'), '-p', dir, '-c', path.join(dir, 'nginx.conf'), '-g', 'daemon off;'], nginxPort, 'nginx');
});
after(async () => {
  for (const p of Object.values(proxies)) p.stop();
  await gw?.stop();
  if (dir) fs.rmSync(dir, { recursive: true, force: true });
});

for (const name of ['haproxy', 'nginx']) {
  describe(`the HTTP streams through ${name}`, () => {
    for (const stream of STREAMS) {
      it(`${stream.transport} [${stream.enc.name}]: connects, stays up across pings, receives publications`, async (t) => {
        const proxy = proxies[name];
        const client = newStreamClient(t, proxy, stream);
        await connect(client);
        const channel = uniqueChannel('', `via-${name}`);
        const sub = client.newSubscription(channel);
        const subscribed = waitEvent(sub, 'subscribed', { failOn: ['unsubscribed'] });
        sub.subscribe();
        await subscribed;
        // Three pings answered through the proxy: the connection is still the same one.
        const interrupted = waitEvent(client, 'connecting', { timeout: 3_500 }).then(() => true, () => false);
        assert.equal(await interrupted, false, 'the stream was interrupted');
        const got = waitEvent(sub, 'publication');
        result(await gw.api('publish', { channel, data: { via: name } }));
        assert.deepEqual(stream.enc.decode((await got).data), { via: name });
      });
    }
  });
}
