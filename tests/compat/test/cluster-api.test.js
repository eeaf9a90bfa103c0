'use strict';
// The cluster acts as one server: a centrifuge-js client reaches gateway A through the
// switching proxy (the load balancer), and the backend calls the server API through gateway B.

const { describe, it, before, after } = require('node:test');
const assert = require('node:assert/strict');
const { startGateway, result } = require('../lib/gateway');
const { startNats } = require('../lib/nats');
const { startProxy } = require('../lib/proxy');
const { ENCODINGS, connectedClient, subscribe, uniqueChannel } = require('../lib/clients');
const { waitEvent } = require('../lib/events');
const { connectionToken } = require('../lib/tokens');

let nats;
let gwA;
let gwB;
before(async () => {
  nats = await startNats();
  gwA = await startGateway({ args: ['--nats-url', nats.url] });
  gwB = await startGateway({ args: ['--nats-url', nats.url] });
  // Both gateways list each other before any call relies on it.
  const deadline = Date.now() + 10_000;
  while (result(await gwB.api('info', {})).nodes.length < 2) {
    if (Date.now() > deadline) throw new Error('gateway B never listed gateway A');
    await new Promise((resolve) => setTimeout(resolve, 50));
  }
});
after(async () => {
  await Promise.all([gwA?.stop(), gwB?.stop()]);
  await nats?.stop();
});

let users = 0;
const uniqueUser = (name) => `${name}-${++users}-${process.pid}`;

/** A client of `user` connected to gateway A through a proxy closed when `t` ends. */
async function onA(t, enc, user) {
  const proxy = await startProxy(gwA.port);
  t.after(() => proxy.close());
  return connectedClient(t, proxy, enc, { token: connectionToken(user) });
}

for (const enc of ENCODINGS) {
  describe(`cluster-wide server API [${enc.name}]`, () => {
    it('disconnect through B closes the user on A (3503, no reconnect)', async (t) => {
      const user = uniqueUser('mallory');
      const { client } = await onA(t, enc, user);
      const disconnected = waitEvent(client, 'disconnected', { failOn: ['connecting'] });
      assert.deepEqual(result(await gwB.api('disconnect', { user })), {});
      assert.equal((await disconnected).code, 3503);
    });

    it('unsubscribe through B ends the subscription on A with code 2000', async (t) => {
      const user = uniqueUser('ivan');
      const { client } = await onA(t, enc, user);
      const channel = uniqueChannel('', 'cluster-kick');
      const { sub } = await subscribe(client, channel);
      const unsubscribed = waitEvent(sub, 'unsubscribed');
      assert.deepEqual(result(await gwB.api('unsubscribe', { channel, user })), {});
      assert.equal((await unsubscribed).code, 2000);
      assert.equal(client.state, 'connected');
    });

    it('subscribe through B subscribes the user on A server-side; publications follow', async (t) => {
      const user = uniqueUser('judy');
      const { client } = await onA(t, enc, user);
      const channel = uniqueChannel('', 'cluster-server-sub');
      const subscribed = waitEvent(client, 'subscribed');
      assert.deepEqual(result(await gwB.api('subscribe', { user, channel })), {});
      const ctx = await subscribed;
      assert.equal(ctx.channel, channel);
      const publication = waitEvent(client, 'publication');
      const position = result(await gwB.api('publish', { channel, data: { text: 'to A' } }));
      const pub = await publication;
      assert.equal(pub.channel, channel);
      assert.deepEqual(enc.decode(pub.data), { text: 'to A' });
      assert.equal(pub.offset, position.offset);
    });

    it('refresh through B with expired: the client on A is closed as expired and reconnects', async (t) => {
      const user = uniqueUser('ken');
      const { client } = await onA(t, enc, user);
      const connecting = waitEvent(client, 'connecting', { failOn: ['disconnected'] });
      assert.deepEqual(result(await gwB.api('refresh', { user, expired: true })), {});
      assert.equal((await connecting).code, 3005);
      await waitEvent(client, 'connected', { failOn: ['disconnected'] });
    });

    it('info and channels through B count the client on A', async (t) => {
      const user = uniqueUser('leo');
      const { client } = await onA(t, enc, user);
      const channel = uniqueChannel('', 'cluster-count');
      await subscribe(client, channel);
      const nodes = result(await gwB.api('info', {})).nodes;
      assert.equal(nodes.length, 2);
      assert.ok(nodes.reduce((sum, n) => sum + n.num_clients, 0) >= 1);
      const channels = result(await gwB.api('channels', { pattern: channel })).channels;
      assert.deepEqual(channels, { [channel]: { num_clients: 1 } });
    });
  });
}
