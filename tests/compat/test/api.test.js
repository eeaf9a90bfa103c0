'use strict';
// The server HTTP API: authentication, validation errors, broadcast, info, channels.

const { describe, it, before, after } = require('node:test');
const assert = require('node:assert/strict');
const { startGateway, result, API_KEY } = require('../lib/gateway');
const { ENCODINGS, connectedClient, subscribe, uniqueChannel } = require('../lib/clients');
const { waitEvent, eventually } = require('../lib/events');

let gw;
before(async () => {
  gw = await startGateway();
});
after(() => gw?.stop());

describe('http api', () => {
  it('answers 401 without an API key or with a wrong one', async () => {
    const channel = uniqueChannel('', 'auth');
    const data = { n: 1 };
    assert.equal((await gw.apiRaw('publish', { channel, data }, {})).status, 401);
    assert.equal((await gw.apiRaw('publish', { channel, data }, { 'X-API-Key': 'wrong' })).status, 401);
    assert.equal((await gw.apiRaw('publish', { channel, data }, { Authorization: 'apikey wrong' })).status, 401);
    // Nothing was published by the refused requests.
    const history = result(await gw.api('history', { channel, limit: 10 }));
    assert.deepEqual(history.publications ?? [], []);
  });

  it('accepts the key in X-API-Key and in Authorization: apikey', async () => {
    const channel = uniqueChannel('', 'auth');
    for (const headers of [{ 'X-API-Key': API_KEY }, { Authorization: `apikey ${API_KEY}` }]) {
      const res = await gw.apiRaw('publish', { channel, data: { ok: true } }, headers);
      assert.equal(res.status, 200, res.text);
      assert.equal(typeof result(res.json).offset, 'number');
    }
  });

  const invalidChannels = {
    'a channel name containing a space': 'has space',
    'a channel name longer than 255 bytes': `long-${'x'.repeat(300)}`,
  };
  for (const [what, channel] of Object.entries(invalidChannels)) {
    it(`publish to ${what} returns an error object, and the gateway keeps serving`, async () => {
      const res = await gw.apiRaw('publish', { channel, data: { n: 1 } });
      assert.ok(res.status < 500, `HTTP ${res.status}: ${res.text}`);
      assert.ok(res.json?.error, `expected an error object, got ${res.text}`);
      assert.equal(typeof res.json.error.code, 'number');
      assert.equal(res.json.result, undefined);

      const good = uniqueChannel('', 'after-invalid');
      assert.equal(typeof result(await gw.api('publish', { channel: good, data: { n: 2 } })).offset, 'number');
      assert.ok(Array.isArray(result(await gw.api('info', {})).nodes));
    });
  }

  it('info lists this node', async () => {
    const { nodes } = result(await gw.api('info', {}));
    assert.equal(nodes.length, 1);
    const [node] = nodes;
    assert.ok(typeof node.uid === 'string' && node.uid !== '');
    for (const field of ['num_clients', 'num_users', 'num_channels', 'uptime']) {
      assert.equal(typeof (node[field] ?? 0), 'number', `${field}: ${JSON.stringify(node)}`);
    }
  });
});

for (const enc of ENCODINGS) {
  describe(`http api with clients [${enc.name}]`, () => {
    it('broadcast publishes to two channels', async (t) => {
      const first = uniqueChannel('', 'bcast');
      const second = uniqueChannel('chat:', 'bcast');
      const { client } = await connectedClient(t, gw, enc);
      const { sub: firstSub } = await subscribe(client, first);
      const { sub: secondSub } = await subscribe(client, second);

      const gotFirst = waitEvent(firstSub, 'publication');
      const gotSecond = waitEvent(secondSub, 'publication');
      const { responses } = result(await gw.api('broadcast', { channels: [first, second], data: { all: 'hands' } }));
      assert.equal(responses.length, 2);
      const [r1, r2] = responses.map(result);
      const [p1, p2] = await Promise.all([gotFirst, gotSecond]);
      assert.deepEqual(enc.decode(p1.data), { all: 'hands' });
      assert.deepEqual(enc.decode(p2.data), { all: 'hands' });
      assert.equal(p1.offset, r1.offset);
      assert.equal(p2.offset, r2.offset);
    });

    it('publish with tags and skip_history, as server SDKs send them', async (t) => {
      const channel = uniqueChannel('', 'tagged');
      const { client } = await connectedClient(t, gw, enc);
      const { sub } = await subscribe(client, channel);

      const tags = { kind: 'note', lang: 'en' };
      let got = waitEvent(sub, 'publication');
      const kept = result(await gw.api('publish', { channel, data: { n: 1 }, tags, idempotency_key: '', delta: false }));
      let ctx = await got;
      assert.deepEqual(enc.decode(ctx.data), { n: 1 });
      assert.deepEqual(ctx.tags, tags);
      assert.equal(ctx.offset, kept.offset);

      got = waitEvent(sub, 'publication');
      const skipped = result(await gw.api('publish', { channel, data: { n: 2 }, tags, skip_history: true }));
      assert.deepEqual(skipped, {});
      ctx = await got;
      assert.deepEqual(enc.decode(ctx.data), { n: 2 });
      assert.deepEqual(ctx.tags, tags);

      const { publications } = await sub.history({ limit: 10 });
      assert.deepEqual(publications.map((p) => enc.decode(p.data)), [{ n: 1 }]);
      assert.deepEqual(publications[0].tags, tags);
    });

    it('channels lists a channel with its subscriber count', async (t) => {
      const channel = uniqueChannel('', 'listed');
      const a = await connectedClient(t, gw, enc);
      const b = await connectedClient(t, gw, enc);
      await subscribe(a.client, channel);
      await subscribe(b.client, channel);

      const { channels } = result(await gw.api('channels', { pattern: channel }));
      assert.deepEqual(Object.keys(channels), [channel]);
      assert.equal(channels[channel].num_clients, 2);
      const everything = result(await gw.api('channels', {})).channels;
      assert.equal(everything[channel]?.num_clients, 2);
    });

    it('info counts connected clients', async (t) => {
      await connectedClient(t, gw, enc);
      // Node stats may be refreshed periodically rather than live.
      await eventually(async () => {
        const [node] = result(await gw.api('info', {})).nodes;
        assert.ok(node.num_clients >= 1, JSON.stringify(node));
      }, { timeout: 10_000 });
    });
  });
}
