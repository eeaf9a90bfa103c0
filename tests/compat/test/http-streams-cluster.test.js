'use strict';
// The HTTP streams in a cluster: each client's stream is held by gateway A (through the
// switching proxy) while its emulation POSTs go to gateway B on purpose, so every command
// travels B → A over the control plane and its reply comes down A's stream.

const { describe, it, before, after } = require('node:test');
const assert = require('node:assert/strict');
const { startGateway, result } = require('../lib/gateway');
const { startNats } = require('../lib/nats');
const { startProxy } = require('../lib/proxy');
const { connect, subscribe, uniqueChannel } = require('../lib/clients');
const { connectionToken } = require('../lib/tokens');
const { waitEvent, record, eventually } = require('../lib/events');
const { STREAMS, newStreamClient, base } = require('../lib/streams');

const RECONNECT = { minReconnectDelay: 100, maxReconnectDelay: 500 };
const TEST_TIMEOUT_MS = 60_000;

let nats;
let gwA;
let gwB;
before(async () => {
  nats = await startNats();
  gwA = await startGateway({ args: ['--nats-url', nats.url] });
  gwB = await startGateway({ args: ['--nats-url', nats.url] });
});
after(async () => {
  await Promise.all([gwA?.stop(), gwB?.stop()]);
  await nats?.stop();
});


/** The gateway's count of emulation requests it delivered to a stream on another node. */
async function forwarded(gw) {
  const text = await (await fetch(`${base(gw)}/metrics`)).text();
  const line = text.split('\n').find((l) => l.startsWith('switchboard_emulation_requests_total{')
    && l.includes('result="delivered"') && l.includes('route="forwarded"'));
  return line ? Number(line.split(' ').pop()) : 0;
}

for (const stream of STREAMS) {
  const { transport, enc } = stream;
  describe(`${transport} [${enc.name}] in a cluster, emulation through the other gateway`, () => {
    it('subscribe, publish, presence and history all travel B → A and answer down the stream', { timeout: TEST_TIMEOUT_MS }, async (t) => {
      const before = await forwarded(gwB);
      const channel = uniqueChannel('chat:', 'cluster-stream');
      const alice = newStreamClient(t, gwA, stream, { emulation: gwB, token: connectionToken('alice') });
      const bob = newStreamClient(t, gwA, stream, { emulation: gwB, token: connectionToken('bob') });
      await Promise.all([connect(alice), connect(bob)]);
      const { sub: aliceSub } = await subscribe(alice, channel);
      const { sub: bobSub } = await subscribe(bob, channel);

      const fromApi = waitEvent(bobSub, 'publication');
      const published = result(await gwB.api('publish', { channel, data: { via: 'B' } }));
      const pub = await fromApi;
      assert.deepEqual(enc.decode(pub.data), { via: 'B' });
      assert.equal(pub.offset, published.offset);

      const fromAlice = waitEvent(bobSub, 'publication');
      await aliceSub.publish(enc.encode({ from: 'alice' }));
      assert.deepEqual(enc.decode((await fromAlice).data), { from: 'alice' });

      const presence = await aliceSub.presence();
      assert.deepEqual(Object.values(presence.clients).map((c) => c.user).sort(), ['alice', 'bob']);
      const history = await bobSub.history({ limit: 10 });
      assert.deepEqual(history.publications.map((p) => enc.decode(p.data)), [{ via: 'B' }, { from: 'alice' }]);

      const unsubscribed = waitEvent(aliceSub, 'unsubscribed');
      aliceSub.unsubscribe();
      await unsubscribed;
      // Two subscribes, a publish, presence, history and the unsubscribe, each counted by
      // B once A took it (the reply may reach the client first).
      await eventually(async () => assert.ok(await forwarded(gwB) - before >= 6, 'the commands went through B to A'));
    });

    it('1,000 publications alternating between A and B arrive in order on a stream', { timeout: TEST_TIMEOUT_MS }, async (t) => {
      const channel = uniqueChannel('', 'cluster-stream-order');
      const client = newStreamClient(t, gwA, stream, { emulation: gwB });
      await connect(client);
      const { sub } = await subscribe(client, channel);
      const got = record(sub, 'publication');
      const offsets = [];
      for (let n = 0; n < 1000; n++) {
        offsets.push(result(await (n % 2 ? gwA : gwB).api('publish', { channel, data: { n } })).offset);
      }
      const pubs = await got.until(1000, { timeout: 30_000 });
      assert.deepEqual(pubs.map((p) => p.offset), offsets);
    });

    it('gateway A killed (-9): the client reconnects through the proxy to B and recovers', { timeout: TEST_TIMEOUT_MS }, async (t) => {
      const own = await startGateway({ args: ['--nats-url', nats.url] });
      t.after(() => own.kill());
      const channel = uniqueChannel('', 'cluster-stream-kill');
      const proxy = await startProxy(own.port);
      t.after(() => proxy.close());
      const client = newStreamClient(t, proxy, stream, { emulation: gwB, ...RECONNECT });
      await connect(client);
      const { sub } = await subscribe(client, channel);

      const connecting = waitEvent(client, 'connecting');
      proxy.hold();
      proxy.switchTo(gwB.port);
      await own.kill();
      await connecting;
      const missed = [];
      for (let n = 1; n <= 5; n++) missed.push(result(await gwB.api('publish', { channel, data: { n } })));

      const got = record(sub, 'publication');
      const resubscribed = waitEvent(sub, 'subscribed', { failOn: ['unsubscribed'], timeout: 20_000 });
      proxy.release();
      const ctx = await resubscribed;
      assert.equal(ctx.recovered, true);
      assert.deepEqual((await got.until(5)).map((p) => p.offset), missed.map((p) => p.offset));
    });
  });
}
