'use strict';
// A real headless Chromium (Debian's, driven by playwright-core) on a page whose WebSocket
// is blocked: centrifuge-js falls back to HTTP-streaming, and without ReadableStream to SSE,
// and still receives publications. The page is served by this test from another origin
// than the gateway's, so CORS is exercised as a browser enforces it.

const { describe, it, before, after } = require('node:test');
const assert = require('node:assert/strict');
const fs = require('node:fs');
const http = require('node:http');
const path = require('node:path');
const { chromium } = require('playwright-core');
const { startGateway, result } = require('../lib/gateway');
const { uniqueChannel } = require('../lib/clients');

const CHROMIUM = process.env.CHROMIUM_BIN || '/usr/bin/chromium';
const SDK = path.join(__dirname, '..', 'node_modules', 'centrifuge', 'dist', 'centrifuge.js');

const PAGE = `<!doctype html><html><head><meta charset="utf-8">
<script>
  // What a proxy that breaks WebSockets looks like to the page.
  window.WebSocket = function () { throw new Error('WebSocket is blocked here'); };
  if (new URLSearchParams(location.search).has('no-streams')) delete window.ReadableStream;
</script>
<script src="/centrifuge.js"></script>
<script>
  const params = new URLSearchParams(location.search);
  const gw = params.get('gw');
  const client = new Centrifuge([
    { transport: 'websocket', endpoint: 'ws://' + gw + '/connection/websocket' },
    { transport: 'http_stream', endpoint: 'http://' + gw + '/connection/http_stream' },
    { transport: 'sse', endpoint: 'http://' + gw + '/connection/sse' },
  ], { emulationEndpoint: 'http://' + gw + '/emulation', minReconnectDelay: 50, maxReconnectDelay: 200 });
  window.state = { transport: null, subscribed: false, received: [] };
  client.on('connected', (ctx) => { window.state.transport = ctx.transport; });
  const sub = client.newSubscription(params.get('channel'));
  sub.on('subscribed', () => { window.state.subscribed = true; });
  sub.on('publication', (ctx) => { window.state.received.push(ctx.data); });
  sub.subscribe();
  client.connect();
</script></head><body>fallback</body></html>`;

let page;
let gw;
let browser;
before(async () => {
  if (!fs.existsSync(CHROMIUM)) {
    throw new Error(`no Chromium at ${CHROMIUM}: apt-get install chromium (or set CHROMIUM_BIN)`);
  }
  const sdk = fs.readFileSync(SDK);
  page = http.createServer((req, res) => {
    if (req.url === '/centrifuge.js') {
      res.writeHead(200, { 'content-type': 'text/javascript' });
      res.end(sdk);
    } else {
      res.writeHead(200, { 'content-type': 'text/html' });
      res.end(PAGE);
    }
  });
  await new Promise((resolve) => page.listen(0, '127.0.0.1', resolve));
  const origin = `http://127.0.0.1:${page.address().port}`;
  gw = await startGateway({ args: ['--allowed-origins', origin] });
  browser = await chromium.launch({
    executablePath: CHROMIUM,
    args: ['--headless', '--no-sandbox', '--disable-background-networking'],
  });
});
after(async () => {
  await browser?.close();
  await gw?.stop();
  page?.close();
});

async function openPage(t, query) {
  const context = await browser.newContext();
  t.after(() => context.close());
  const tab = await context.newPage();
  await tab.goto(`http://127.0.0.1:${page.address().port}/?${query}`);
  return tab;
}

describe('a browser whose WebSocket is blocked', () => {
  for (const [transport, extra] of [['http_stream', ''], ['sse', '&no-streams']]) {
    it(`falls back to ${transport} and receives publications`, async (t) => {
      const channel = uniqueChannel('', `browser-${transport}`);
      const tab = await openPage(t, `gw=127.0.0.1:${gw.port}&channel=${channel}${extra}`);
      await tab.waitForFunction(() => window.state.subscribed, null, { timeout: 15_000 });
      assert.equal(await tab.evaluate(() => window.state.transport), transport);
      for (let n = 1; n <= 3; n++) result(await gw.api('publish', { channel, data: { n } }));
      await tab.waitForFunction(() => window.state.received.length >= 3, null, { timeout: 10_000 });
      assert.deepEqual(await tab.evaluate(() => window.state.received), [{ n: 1 }, { n: 2 }, { n: 3 }]);
    });
  }
});
