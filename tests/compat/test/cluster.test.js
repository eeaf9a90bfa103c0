'use strict';
// Cluster mode: gateways sharing one NATS JetStream. Publications reach subscribers on every
// gateway in order, with stream offsets; a client that moves to another gateway recovers.
// (Presence is still per gateway in cluster mode, so nothing here looks at presence.)

const { describe, it, before, after } = require('node:test');
const assert = require('node:assert/strict');
const { startGateway, result } = require('../lib/gateway');
const { startNats } = require('../lib/nats');
const { startProxy } = require('../lib/proxy');
const { ENCODINGS, newClient, connect, connectedClient, subscribe, uniqueChannel } = require('../lib/clients');
const { waitEvent, record } = require('../lib/events');

// The SDK's own reconnect, kept quick.
const RECONNECT = { minReconnectDelay: 100, maxReconnectDelay: 500 };
// Per-test cap (node:test), on top of the deadline of every single wait.
const TEST_TIMEOUT_MS = 60_000;

let nats;
let gwA;
let gwB;
const clusterArgs = () => ['--nats-url', nats.url];
before(async () => {
  nats = await startNats();
  gwA = await startGateway({ args: clusterArgs() });
  gwB = await startGateway({ args: clusterArgs() });
});
after(async () => {
  await Promise.all([gwA?.stop(), gwB?.stop()]);
  await nats?.stop();
});

/** A proxy in front of `gw`, closed when test `t` ends. */
async function proxyTo(t, gw) {
  const proxy = await startProxy(gw.port);
  t.after(() => proxy.close());
  return proxy;
}

for (const enc of ENCODINGS) {
  describe(`cluster [${enc.name}]`, () => {
    it('a publication through gateway A reaches subscribers on A and on B with the same offset', async (t) => {
      const channel = uniqueChannel('', 'cluster-news');
      const onA = await connectedClient(t, gwA, enc);
      const onB = await connectedClient(t, gwB, enc);
      const { sub: subA, ctx: ctxA } = await subscribe(onA.client, channel);
      const { sub: subB, ctx: ctxB } = await subscribe(onB.client, channel);
      assert.equal(ctxA.recoverable, true);
      assert.equal(ctxB.recoverable, true);
      assert.equal(ctxA.streamPosition.epoch, ctxB.streamPosition.epoch, 'one stream, one epoch');

      const gotA = waitEvent(subA, 'publication');
      const gotB = waitEvent(subB, 'publication');
      const published = result(await gwA.api('publish', { channel, data: { text: 'hello cluster' } }));
      const [pubA, pubB] = await Promise.all([gotA, gotB]);
      for (const pub of [pubA, pubB]) {
        assert.equal(pub.channel, channel);
        assert.deepEqual(enc.decode(pub.data), { text: 'hello cluster' });
        assert.equal(pub.offset, published.offset);
      }
      assert.equal(published.epoch, ctxA.streamPosition.epoch);
    });

    it('a client publish (chat:) from a client on B reaches a client on A', async (t) => {
      const channel = uniqueChannel('chat:', 'cluster-room');
      const alice = await connectedClient(t, gwB, enc);
      const bob = await connectedClient(t, gwA, enc);
      const { sub: aliceSub } = await subscribe(alice.client, channel);
      const { sub: bobSub } = await subscribe(bob.client, channel);

      const publication = waitEvent(bobSub, 'publication');
      await aliceSub.publish(enc.encode({ text: 'hi from B' }));
      const pub = await publication;
      assert.equal(pub.channel, channel);
      assert.deepEqual(enc.decode(pub.data), { text: 'hi from B' });
      assert.equal(typeof pub.offset, 'number');
      assert.equal(pub.info?.client, alice.clientId);
    });

    it('200 publications alternating between A and B arrive on both gateways in the same order',
      { timeout: TEST_TIMEOUT_MS }, async (t) => {
        const channel = uniqueChannel('', 'cluster-order');
        const total = 200;
        const onA = await connectedClient(t, gwA, enc);
        const onB = await connectedClient(t, gwB, enc);
        const { sub: subA } = await subscribe(onA.client, channel);
        const { sub: subB } = await subscribe(onB.client, channel);
        const receivedA = record(subA, 'publication');
        const receivedB = record(subB, 'publication');

        const positions = [];
        for (let n = 0; n < total; n++) {
          const via = n % 2 === 0 ? gwA : gwB;
          positions.push(result(await via.api('publish', { channel, data: { n } })));
        }
        // A last publication marks the end of the stream: a duplicate would show up before it.
        const sentinel = result(await gwB.api('publish', { channel, data: { n: 'end' } }));

        const expectedData = [...positions.map((_, n) => ({ n })), { n: 'end' }];
        const expectedOffsets = [...positions.map((p) => p.offset), sentinel.offset];
        for (let i = 1; i < expectedOffsets.length; i++) {
          assert.ok(expectedOffsets[i] > expectedOffsets[i - 1], `API offsets must increase: ${expectedOffsets}`);
        }
        for (const [where, received] of [['A', receivedA], ['B', receivedB]]) {
          const pubs = await received.until(total + 1, { timeout: 20_000 });
          assert.deepEqual(pubs.map((p) => enc.decode(p.data)), expectedData, `data order on ${where}`);
          assert.deepEqual(pubs.map((p) => p.offset), expectedOffsets, `offsets on ${where}`);
        }
      });

    it('a client that drops off A and reconnects to B recovers what it missed (recovered: true)',
      { timeout: TEST_TIMEOUT_MS }, async (t) => {
        const channel = uniqueChannel('', 'cluster-recover');
        const missed = 5;
        const proxy = await proxyTo(t, gwA);
        const client = newClient(t, proxy, enc, RECONNECT);
        await connect(client);
        const { sub, ctx: first } = await subscribe(client, channel);
        assert.equal(first.recoverable, true);

        const live = waitEvent(sub, 'publication');
        const livePos = result(await gwA.api('publish', { channel, data: { n: 0 } }));
        assert.equal((await live).offset, livePos.offset);

        // The load balancer moves to B and drops the connection. The SDK reconnects by itself;
        // the proxy holds its new connection until the publications it is to miss are out.
        const connecting = waitEvent(client, 'connecting');
        proxy.hold();
        proxy.switchTo(gwB.port);
        proxy.dropAll();
        await connecting;

        const positions = [];
        for (let n = 1; n <= missed; n++) {
          positions.push(result(await gwA.api('publish', { channel, data: { n } })));
        }

        const received = record(sub, 'publication');
        const reconnected = waitEvent(client, 'connected');
        const resubscribed = waitEvent(sub, 'subscribed', { failOn: ['unsubscribed'] });
        proxy.release();
        await reconnected;
        const ctx = await resubscribed;
        assert.equal(ctx.wasRecovering, true);
        assert.equal(ctx.recovered, true);
        assert.equal(ctx.recoverable, true);
        assert.equal(ctx.streamPosition.epoch, livePos.epoch);

        const sentinel = result(await gwB.api('publish', { channel, data: { n: 'live' } }));
        const pubs = await received.until(missed + 1);
        assert.deepEqual(pubs.map((p) => enc.decode(p.data)),
          [...positions.map((_, i) => ({ n: i + 1 })), { n: 'live' }]);
        assert.deepEqual(pubs.map((p) => p.offset), [...positions.map((p) => p.offset), sentinel.offset]);
      });

    it('a gateway killed with SIGKILL mid-stream: the client moves to B and misses nothing',
      { timeout: TEST_TIMEOUT_MS }, async (t) => {
        const channel = uniqueChannel('', 'cluster-kill');
        const total = 100;
        const killAt = 50;
        const gwC = await startGateway({ args: clusterArgs() });
        t.after(() => gwC.kill());
        const proxy = await proxyTo(t, gwC);
        const client = newClient(t, proxy, enc, RECONNECT);
        await connect(client);
        const sub = client.newSubscription(channel);
        const subscribedEvents = record(sub, 'subscribed');
        const received = record(sub, 'publication');
        const firstSubscribe = waitEvent(sub, 'subscribed', { failOn: ['unsubscribed'] });
        sub.subscribe();
        const first = await firstSubscribe;
        assert.equal(first.recoverable, true);
        assert.equal(first.wasRecovering, false);

        const positions = [];
        for (let n = 0; n < total; n++) {
          if (n === killAt) {
            await gwC.kill();
            proxy.switchTo(gwB.port);
          }
          positions.push(result(await gwA.api('publish', { channel, data: { n } })));
        }
        const sentinel = result(await gwA.api('publish', { channel, data: { n: 'end' } }));

        const pubs = await received.until(total + 1, { timeout: 20_000 });
        assert.deepEqual(pubs.map((p) => enc.decode(p.data)),
          [...positions.map((_, n) => ({ n })), { n: 'end' }]);
        assert.deepEqual(pubs.map((p) => p.offset), [...positions.map((p) => p.offset), sentinel.offset]);

        // The first 'subscribed' is the original subscribe; every later one a recovering
        // resubscribe, at least one of them (on B).
        const resubscribes = subscribedEvents.items.slice(1);
        assert.ok(resubscribes.length >= 1, `expected a resubscribe, got ${subscribedEvents.items.length} 'subscribed'`);
        for (const ctx of resubscribes) {
          assert.equal(ctx.wasRecovering, true);
          assert.equal(ctx.recovered, true);
        }
        assert.equal(client.state, 'connected');
      });
  });
}
