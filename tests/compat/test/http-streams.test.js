'use strict';
// centrifuge-js over HTTP-streaming (JSON and protobuf) and SSE against one gateway: the
// connect command rides the stream's request, every later command an emulation POST, and
// everything the server says comes down the stream.

const { describe, it, before, after } = require('node:test');
const assert = require('node:assert/strict');
const { startGateway, result } = require('../lib/gateway');
const { connect, subscribe, uniqueChannel } = require('../lib/clients');
const { connectionToken } = require('../lib/tokens');
const { startProxy } = require('../lib/proxy');
const { waitEvent, record, eventually } = require('../lib/events');
const { STREAMS, newStreamClient, rawRequest } = require('../lib/streams');

const RECONNECT = { minReconnectDelay: 100, maxReconnectDelay: 500 };
const ALLOWED = 'http://allowed.example';

let gw;
before(async () => {
  gw = await startGateway({ args: ['--allowed-origins', ALLOWED] });
});
after(() => gw?.stop());


for (const stream of STREAMS) {
  const { transport, enc } = stream;
  describe(`${transport} [${enc.name}]`, () => {
    it('connects over the stream: the SDK reports the transport and a client id', async (t) => {
      const client = newStreamClient(t, gw, stream);
      const ctx = await connect(client);
      assert.equal(ctx.transport, transport);
      assert.match(ctx.client, /^[0-9a-f-]{36}$/);
    });

    it('subscribes through emulation; an API publication and another client\'s publish come down the stream', async (t) => {
      const channel = uniqueChannel('chat:', 'stream');
      const alice = newStreamClient(t, gw, stream);
      const bob = newStreamClient(t, gw, stream);
      await Promise.all([connect(alice), connect(bob)]);
      const { sub: aliceSub } = await subscribe(alice, channel);
      const { sub: bobSub } = await subscribe(bob, channel);

      const fromApi = waitEvent(bobSub, 'publication');
      const published = result(await gw.api('publish', { channel, data: { from: 'api' } }));
      const pub = await fromApi;
      assert.deepEqual(enc.decode(pub.data), { from: 'api' });
      assert.equal(pub.offset, published.offset);

      const fromAlice = waitEvent(bobSub, 'publication');
      await aliceSub.publish(enc.encode({ from: 'alice' }));
      assert.deepEqual(enc.decode((await fromAlice).data), { from: 'alice' });
    });

    it('100 publications arrive in order', async (t) => {
      const channel = uniqueChannel('', 'stream-order');
      const client = newStreamClient(t, gw, stream);
      await connect(client);
      const { sub } = await subscribe(client, channel);
      const got = record(sub, 'publication');
      for (let n = 0; n < 100; n++) result(await gw.api('publish', { channel, data: { n } }));
      const pubs = await got.until(100, { timeout: 10_000 });
      assert.deepEqual(pubs.map((p) => enc.decode(p.data).n), [...Array(100).keys()]);
    });

    it('presence, presence stats and history answer over emulation', async (t) => {
      const channel = uniqueChannel('chat:', 'stream-reads');
      const client = newStreamClient(t, gw, stream, { token: connectionToken('carol') });
      await connect(client);
      const { sub } = await subscribe(client, channel);
      result(await gw.api('publish', { channel, data: { n: 1 } }));
      result(await gw.api('publish', { channel, data: { n: 2 } }));

      const presence = await sub.presence();
      assert.deepEqual(Object.values(presence.clients).map((c) => c.user), ['carol']);
      const stats = await sub.presenceStats();
      assert.deepEqual(stats, { numClients: 1, numUsers: 1 });
      const history = await sub.history({ limit: 10 });
      assert.deepEqual(history.publications.map((p) => enc.decode(p.data).n), [1, 2]);
    });

    it('a dropped stream reconnects and recovers what it missed (recovered: true)', async (t) => {
      const channel = uniqueChannel('', 'stream-recover');
      const proxy = await startProxy(gw.port);
      t.after(() => proxy.close());
      // The stream goes through the proxy; the emulation POSTs straight to the gateway.
      const client = newStreamClient(t, proxy, stream, { emulation: gw, ...RECONNECT });
      await connect(client);
      const { sub } = await subscribe(client, channel);

      const connecting = waitEvent(client, 'connecting');
      proxy.hold();
      proxy.dropAll();
      await connecting;
      const missed = [];
      for (let n = 1; n <= 5; n++) missed.push(result(await gw.api('publish', { channel, data: { n } })));

      const got = record(sub, 'publication');
      const resubscribed = waitEvent(sub, 'subscribed', { failOn: ['unsubscribed'] });
      proxy.release();
      const ctx = await resubscribed;
      assert.equal(ctx.wasRecovering, true);
      assert.equal(ctx.recovered, true);
      const pubs = await got.until(5);
      assert.deepEqual(pubs.map((p) => p.offset), missed.map((p) => p.offset));
    });

    it('a token refreshed through emulation keeps the connection past the first token\'s expiry', async (t) => {
      const channel = uniqueChannel('', 'stream-refresh');
      let refreshed = 0;
      const expiry = Date.now() + 2_000;
      const client = newStreamClient(t, gw, stream, {
        token: connectionToken('dave', { ttl: 2 }),
        getToken: async () => {
          refreshed += 1;
          return connectionToken('dave');
        },
      });
      await connect(client);
      const interrupted = record(client, 'connecting');
      const { sub } = await subscribe(client, channel);
      await eventually(() => assert.ok(refreshed >= 1, 'getToken was not called'), { timeout: 10_000 });
      // Past the first token's expiry (and the server's check of it), still connected.
      await eventually(() => assert.ok(Date.now() > expiry + 1_500), { timeout: 10_000 });
      const pub = waitEvent(sub, 'publication');
      result(await gw.api('publish', { channel, data: { still: 'here' } }));
      assert.deepEqual(enc.decode((await pub).data), { still: 'here' });
      assert.deepEqual(interrupted.items, [], 'the connection was not interrupted');
    });

    it('unsubscribe leaves the channel on the server; disconnect forgets the client', async (t) => {
      const channel = uniqueChannel('', 'stream-leave');
      const client = newStreamClient(t, gw, stream);
      await connect(client);
      const { sub } = await subscribe(client, channel);
      const presence = async () => Object.keys(result(await gw.api('presence', { channel })).presence);
      assert.equal((await presence()).length, 1);
      const unsubscribed = waitEvent(sub, 'unsubscribed');
      sub.unsubscribe();
      await unsubscribed;
      await eventually(async () => assert.deepEqual(await presence(), []));

      const again = waitEvent(sub, 'subscribed', { failOn: ['unsubscribed'] });
      sub.subscribe();
      await again;
      assert.equal((await presence()).length, 1);
      client.disconnect();
      await eventually(async () => assert.deepEqual(await presence(), []));
    });
  });
}

describe('the emulation endpoint and the stream endpoints refuse what they cannot serve', () => {
  const post = (body, headers = {}) => rawRequest(gw, {
    path: '/emulation', headers: { 'content-type': 'application/json', ...headers }, body,
  });

  it('an unknown session on this gateway: 204, marked gone (the SDK waits for its stream to end)', async () => {
    const res = await post(JSON.stringify({ session: 'no-such-session', data: '{"id":1,"ping":{}}' }));
    assert.equal(res.status, 204);
    assert.equal(res.headers['x-switchboard-session'], 'gone');
  });

  it('a node no gateway is: 404, so the SDK reconnects', async () => {
    const res = await post(JSON.stringify({ session: 's', node: 'no-such-node', data: '{}' }));
    assert.equal(res.status, 404);
    assert.match(JSON.parse(res.text).error, /no such node/);
  });

  it('malformed requests: 400 with the reason', async () => {
    for (const body of ['not json', '{"data":"{}"}', '{"session":"s","data":7}']) {
      const res = await post(body);
      assert.equal(res.status, 400, body);
      assert.ok(JSON.parse(res.text).error, body);
    }
  });

  it('a body over the limit: 413', async () => {
    const res = await post(JSON.stringify({ session: 's', data: 'x'.repeat(200_000) }));
    assert.equal(res.status, 413);
  });

  it('an SSE request without cf_connect: 400; an empty http_stream body: 400', async () => {
    assert.equal((await rawRequest(gw, { method: 'GET', path: '/connection/sse' })).status, 400);
    assert.equal((await rawRequest(gw, { path: '/connection/http_stream', body: '' })).status, 400);
  });

  it('a malformed connect command ends the stream with a disconnect (bad request, no reconnect)', async () => {
    const res = await rawRequest(gw, { path: '/connection/http_stream', body: 'not json' });
    assert.equal(res.status, 200);
    const [line] = res.text.trim().split('\n');
    // Code 3501 (3500-3999: do not reconnect); JSON leaves `reconnect: false` out.
    assert.deepEqual(JSON.parse(line).push.disconnect, { code: 3501, reason: 'bad request' });
  });
});

describe('CORS for browser pages on other origins', () => {
  it('a preflight from an allowed origin gets the CORS answer', async () => {
    const res = await rawRequest(gw, {
      method: 'OPTIONS',
      path: '/emulation',
      headers: { origin: ALLOWED, 'access-control-request-method': 'POST', 'access-control-request-headers': 'content-type' },
    });
    assert.equal(res.status, 204);
    assert.equal(res.headers['access-control-allow-origin'], ALLOWED);
    assert.match(res.headers['access-control-allow-methods'], /POST/);
    assert.equal(res.headers['access-control-allow-headers'], 'content-type');
  });

  it('a stream opened from an allowed origin carries Access-Control-Allow-Origin', async () => {
    const controller = new AbortController();
    const res = await fetch(`${gw.httpUrl}/connection/http_stream`, {
      method: 'POST', body: '{"id":1,"connect":{}}', headers: { origin: ALLOWED }, signal: controller.signal,
    });
    assert.equal(res.status, 200);
    assert.equal(res.headers.get('access-control-allow-origin'), ALLOWED);
    assert.equal(res.headers.get('content-type'), 'application/json');
    controller.abort();
  });

  it('any other origin is refused with 403', async () => {
    for (const path of ['/emulation', '/connection/http_stream']) {
      const res = await rawRequest(gw, { path, headers: { origin: 'http://evil.example' }, body: '{}' });
      assert.equal(res.status, 403, path);
    }
  });
});

describe('drain over the streams', () => {
  it('SIGTERM ends each stream with a disconnect push that says reconnect (3001)', async (t) => {
    const own = await startGateway({ args: ['--drain-window', '1'] });
    t.after(() => own.stop());
    const clients = STREAMS.map((stream) => newStreamClient(t, own, stream, { minReconnectDelay: 60_000 }));
    await Promise.all(clients.map(connect));
    const connecting = clients.map((c) => waitEvent(c, 'connecting', { failOn: ['disconnected'], timeout: 10_000 }));
    await own.stop();
    for (const ctx of await Promise.all(connecting)) {
      assert.equal(ctx.code, 3001);
    }
  });
});
