'use strict';
// The Pusher front end in cluster mode: gateways over one NATS answer as one server. Events,
// client events, presence, queries, sendToUser and terminate work across gateways; 1,000 API
// events arrive in order everywhere; after a kill -9, pusher-js moves to another gateway and
// presence settles exactly once the dead gateway's members expire (--presence-ttl 3).

const { describe, it, before, after } = require('node:test');
const assert = require('node:assert/strict');
const { startGateway } = require('../lib/gateway');
const { startNats } = require('../lib/nats');
const { startProxy } = require('../lib/proxy');
const { uniqueChannel } = require('../lib/clients');
const { eventually } = require('../lib/events');
const {
  serverSdk, connectedPusher, connected, newPusher, waitBind, recordBind, subscribe, subscribed,
  signIn, body, sortedIds, all,
} = require('../lib/pusher');

const TEST_TIMEOUT_MS = 90_000;
// Presence of a dead gateway expires after --presence-ttl; polls wait well beyond it.
const SETTLE_MS = 20_000;

let nats;
let gwA;
let gwB;
let apiA;
let apiB;
const clusterArgs = () => ['--nats-url', nats.url, '--presence-ttl', '3'];
before(async () => {
  nats = await startNats();
  gwA = await startGateway({ args: clusterArgs() });
  gwB = await startGateway({ args: clusterArgs() });
  apiA = serverSdk(gwA);
  apiB = serverSdk(gwB);
});
after(async () => {
  await Promise.all([gwA?.stop(), gwB?.stop()]);
  await nats?.stop();
});

const user = (id) => ({ user: { user_id: id, user_info: { name: id } } });
const usersVia = async (api, channel) => sortedIds((await body(api.get({ path: `/channels/${channel}/users` }))).users);
const infoVia = (api, channel) =>
  body(api.get({ path: `/channels/${channel}`, params: { info: 'subscription_count,user_count' } }));

describe('pusher cluster', () => {
  it('an event triggered through either gateway reaches subscribers on both', async (t) => {
    const channel = uniqueChannel('', 'cluster-news');
    const priv = uniqueChannel('private-', 'cluster-news');
    const onA = await connectedPusher(t, gwA);
    const onB = await connectedPusher(t, gwB);
    const subs = [];
    for (const client of [onA, onB]) {
      for (const name of [channel, priv]) subs.push((await subscribe(client.pusher, name)).channel);
    }
    for (const [via, api] of [['A', apiA], ['B', apiB]]) {
      const got = subs.map((sub) => waitBind(sub, 'news', { filter: (d) => d.via === via }));
      await api.trigger([channel, priv], 'news', { via });
      await all(got);
    }
  });

  it('a client event from a client on A reaches a client on B with its user_id, not echoed', async (t) => {
    const channel = uniqueChannel('presence-', 'cluster-chat');
    const alice = await connectedPusher(t, gwA, user('alice'));
    const bob = await connectedPusher(t, gwB, user('bob'));
    const { channel: aliceSub } = await subscribe(alice.pusher, channel);
    const { channel: bobSub } = await subscribe(bob.pusher, channel);
    const echoed = recordBind(aliceSub, 'client-msg');
    const received = recordBind(bobSub, 'client-msg');
    aliceSub.trigger('client-msg', { text: 'hi B' });
    await received.until(1);
    assert.deepEqual(received.items, [{ text: 'hi B' }]);
    assert.deepEqual(received.metas[0], { user_id: 'alice' });
    const marker = waitBind(aliceSub, 'marker');
    await apiB.trigger(channel, 'marker', {});
    await marker;
    assert.deepEqual(echoed.items, []);
  });

  it('presence spans gateways: members, member_added once per user, member_removed on the last connection', async (t) => {
    const channel = uniqueChannel('presence-', 'cluster-room');
    const alice = await connectedPusher(t, gwA, user('alice'));
    const { channel: aliceSub } = await subscribe(alice.pusher, channel);
    const added = recordBind(aliceSub, 'pusher:member_added');
    const removed = recordBind(aliceSub, 'pusher:member_removed');

    const bobB = await connectedPusher(t, gwB, user('bob'));
    const { data: bobMembers } = await subscribe(bobB.pusher, channel);
    assert.deepEqual(Object.keys(bobMembers.members).sort(), ['alice', 'bob'], 'bob on B sees alice on A');
    const bobA = await connectedPusher(t, gwA, user('bob'));
    await subscribe(bobA.pusher, channel);
    const carol = await connectedPusher(t, gwB, user('carol'));
    await subscribe(carol.pusher, channel);
    await eventually(() => assert.ok(added.items.some((m) => m.id === 'carol'), 'carol added'));
    assert.deepEqual(added.items.map((m) => m.id), ['bob', 'carol'], 'bob is added once, across gateways');
    for (const api of [apiA, apiB]) {
      assert.deepEqual(await usersVia(api, channel), ['alice', 'bob', 'carol']);
      assert.deepEqual(await infoVia(api, channel), { occupied: true, subscription_count: 4, user_count: 3 });
    }

    bobB.pusher.disconnect();
    await eventually(async () => assert.equal((await infoVia(apiA, channel)).subscription_count, 3));
    const carolGone = waitBind(aliceSub, 'pusher:member_removed', { filter: (m) => m.id === 'carol' });
    carol.pusher.unsubscribe(channel);
    await carolGone;
    assert.deepEqual(removed.items.map((m) => m.id), ['carol'], 'bob still has a connection on A');
    const bobGone = waitBind(aliceSub, 'pusher:member_removed', { filter: (m) => m.id === 'bob' });
    bobA.pusher.disconnect();
    await bobGone;
    for (const api of [apiA, apiB]) {
      await eventually(async () => assert.deepEqual(await usersVia(api, channel), ['alice']));
    }
  });

  /**
   * Triggers 1,000 events one after the other (each answered before the next is sent), the
   * n-th through `via(n)`, and checks that clients on A and on B get all of them in order.
   */
  async function orderTest(t, via) {
    const channel = uniqueChannel('', 'cluster-order');
    const total = 1_000;
    const onA = await connectedPusher(t, gwA);
    const onB = await connectedPusher(t, gwB);
    const { channel: subA } = await subscribe(onA.pusher, channel);
    const { channel: subB } = await subscribe(onB.pusher, channel);
    const receivedA = recordBind(subA, 'seq');
    const receivedB = recordBind(subB, 'seq');
    for (let n = 0; n < total; n++) {
      const res = await via(n).trigger(channel, 'seq', { n });
      assert.equal(res.status, 200);
    }
    const expected = Array.from({ length: total }, (_, n) => n);
    for (const [where, received] of [['A', receivedA], ['B', receivedB]]) {
      const items = await received.until(total, { timeout: 30_000 });
      const got = items.map((d) => d.n);
      const firstOff = got.findIndex((n, i) => n !== expected[i]);
      assert.deepEqual(got, expected, `order on ${where}: first difference at index ${firstOff}: ` +
        `${JSON.stringify(got.slice(Math.max(0, firstOff - 2), firstOff + 3))}`);
    }
    // Nothing more than the 1,000: a marker after them is the next event.
    const marker = waitBind(subA, 'marker');
    await via(total).trigger(channel, 'marker', {});
    await marker;
    assert.equal(receivedA.items.length, total);
  }

  it('1,000 events triggered through A arrive on A and on B in order', { timeout: TEST_TIMEOUT_MS },
    (t) => orderTest(t, () => apiA));

  it('1,000 events triggered through A and B in turn arrive on both gateways in the order they were accepted',
    { timeout: TEST_TIMEOUT_MS }, (t) => orderTest(t, (n) => (n % 2 === 0 ? apiA : apiB)));

  it('channel queries through B see subscribers on A', async (t) => {
    const room = uniqueChannel('presence-', 'cluster-query');
    const open = uniqueChannel('', 'cluster-query');
    for (const id of ['q1', 'q2', 'q2']) {
      const { pusher } = await connectedPusher(t, gwA, user(id));
      await subscribe(pusher, room);
    }
    const { pusher } = await connectedPusher(t, gwA);
    await subscribe(pusher, open);

    await eventually(async () => {
      assert.deepEqual(await infoVia(apiB, room), { occupied: true, subscription_count: 3, user_count: 2 });
      assert.deepEqual(await usersVia(apiB, room), ['q1', 'q2']);
      const openInfo = await body(apiB.get({ path: `/channels/${open}`, params: { info: 'subscription_count' } }));
      assert.deepEqual(openInfo, { occupied: true, subscription_count: 1 });
      const list = await body(apiB.get({ path: '/channels', params: { filter_by_prefix: 'presence-', info: 'user_count' } }));
      assert.deepEqual(list.channels?.[room], { user_count: 2 }, JSON.stringify(list));
      const triggered = await body(apiB.trigger(room, 'counted', {}, { info: 'subscription_count,user_count' }));
      assert.deepEqual(triggered.channels?.[room], { subscription_count: 3, user_count: 2 }, JSON.stringify(triggered));
    });
  });

  it('sendToUser and terminateUserConnections through B reach the user on A', async (t) => {
    const onA = await connectedPusher(t, gwA, user('900'));
    await signIn(onA.pusher);
    const other = await connectedPusher(t, gwA, user('901'));
    await signIn(other.pusher);

    const got = waitBind(onA.pusher.user, 'notice');
    await apiB.sendToUser('900', 'notice', { from: 'B' });
    assert.deepEqual(await got, { from: 'B' });

    const left = waitBind(onA.pusher.connection, 'state_change', {
      filter: ({ previous }) => previous === 'connected',
      what: 'the connection of user 900 on A to be terminated',
    });
    const otherStates = recordBind(other.pusher.connection, 'state_change');
    await apiB.terminateUserConnections('900');
    await left;
    // 901 kept its connection: a notice through B still reaches it, with no state change.
    const stillThere = waitBind(other.pusher.user, 'notice');
    await apiB.sendToUser('901', 'notice', { ok: true });
    await stillThere;
    assert.deepEqual(otherStates.items, []);
  });

  it('kill -9 of a gateway: pusher-js reconnects through the proxy to B, presence settles exactly', { timeout: TEST_TIMEOUT_MS }, async (t) => {
    const room = uniqueChannel('presence-', 'cluster-kill');
    const gwC = await startGateway({ args: clusterArgs() });
    t.after(() => gwC.kill());
    const proxy = await startProxy(gwC.port);
    t.after(() => proxy.close());

    const watcher = await connectedPusher(t, gwA, user('watcher'));
    const { channel: watch } = await subscribe(watcher.pusher, room);
    const removed = recordBind(watch, 'pusher:member_removed');
    // alice: on A and on C; carol: on C only; dave: through the proxy, on C for now.
    const aliceA = await connectedPusher(t, gwA, user('alice'));
    await subscribe(aliceA.pusher, room);
    const aliceC = await connectedPusher(t, gwC, user('alice'));
    await subscribe(aliceC.pusher, room);
    const carol = await connectedPusher(t, gwC, user('carol'));
    await subscribe(carol.pusher, room);
    const dave = newPusher(t, proxy, user('dave'));
    const daveBefore = await connected(dave);
    const daveSub = dave.subscribe(room);
    await subscribed(daveSub);
    await eventually(async () => assert.deepEqual(await infoVia(apiB, room),
      { occupied: true, subscription_count: 5, user_count: 4 }));

    const resubscribed = waitBind(daveSub, 'pusher:subscription_succeeded', { timeout: SETTLE_MS, what: "dave's resubscription on B" });
    proxy.switchTo(gwB.port);
    await gwC.kill();
    // The clients left on C cannot come back; they would only retry a dead port.
    aliceC.pusher.disconnect();
    carol.pusher.disconnect();

    await resubscribed;
    const daveAfter = await connected(dave);
    assert.notEqual(daveAfter, daveBefore, 'dave has a new connection (on B)');
    const got = waitBind(daveSub, 'after-kill');
    await apiA.trigger(room, 'after-kill', { n: 1 });
    assert.deepEqual(await got, { n: 1 });

    // C's members expire: carol leaves, alice stays (on A), dave is back (on B).
    const expected = { occupied: true, subscription_count: 3, user_count: 3 };
    for (const api of [apiA, apiB]) {
      await eventually(async () => {
        assert.deepEqual(await usersVia(api, room), ['alice', 'dave', 'watcher']);
        assert.deepEqual(await infoVia(api, room), expected);
      }, { timeout: SETTLE_MS, interval: 200 });
    }
    await eventually(() => assert.ok(removed.items.some((m) => m.id === 'carol'), 'member_removed for carol'),
      { timeout: SETTLE_MS });
    assert.deepEqual(removed.items.filter((m) => m.id !== 'dave').map((m) => m.id), ['carol'],
      'alice was never removed: she kept her connection on A');
    await eventually(() => assert.deepEqual(Object.keys(watch.members.members).sort(), ['alice', 'dave', 'watcher']),
      { timeout: SETTLE_MS });
  });
});
