'use strict';
// The Pusher HTTP API through the `pusher` server SDK: trigger (one and many channels,
// socket_id exclusion, info), triggerBatch, channel queries, users, signatures and app ids.

const { describe, it, before, after } = require('node:test');
const assert = require('node:assert/strict');
const { startGateway } = require('../lib/gateway');
const { uniqueChannel } = require('../lib/clients');
const { eventually } = require('../lib/events');
const {
  APPS, serverSdk, connectedPusher, waitBind, recordBind, subscribe, body, statusOf, sortedIds, all,
} = require('../lib/pusher');

let gw;
let api;
before(async () => {
  gw = await startGateway();
  api = serverSdk(gw);
});
after(() => gw?.stop());

const user = (id) => ({ user: { user_id: id, user_info: { name: id } } });

/** Waits until `sub` got `event` on its channel after everything triggered before. */
async function flush(sub) {
  const got = waitBind(sub, 'api-marker', { what: `the marker on ${sub.name}` });
  await api.trigger(sub.name, 'api-marker', {});
  await got;
}

describe('pusher http api', () => {
  it('trigger to one channel answers 200 {} and the subscribers get the event', async (t) => {
    const channel = uniqueChannel('', 'one');
    const { pusher } = await connectedPusher(t, gw);
    const { channel: sub } = await subscribe(pusher, channel);
    const got = waitBind(sub, 'created');
    assert.deepEqual(await body(api.trigger(channel, 'created', { id: 1 })), {});
    assert.deepEqual(await got, { id: 1 });
  });

  it('trigger to 100 channels reaches every one; 101 channels are refused with 400', { timeout: 30_000 }, async (t) => {
    const { pusher } = await connectedPusher(t, gw);
    const channels = Array.from({ length: 100 }, () => uniqueChannel('', 'multi'));
    const subs = [];
    for (const name of channels) subs.push((await subscribe(pusher, name)).channel);
    const got = subs.map((sub) => waitBind(sub, 'fanout'));
    const res = await api.trigger(channels, 'fanout', { all: true });
    assert.equal(res.status, 200);
    for (const data of await all(got)) assert.deepEqual(data, { all: true });

    // The SDK refuses 101 itself, so the request is signed and posted by hand.
    const received = subs.map((sub) => recordBind(sub, 'too-many'));
    const tooMany = [...channels, uniqueChannel('', 'multi')];
    const refused = await statusOf(api.post({ path: '/events', body: { name: 'too-many', data: '{}', channels: tooMany } }));
    assert.equal(refused.status, 400, refused.body);
    await flush(subs[0]);
    assert.deepEqual(received[0].items, []);
  });

  it('socket_id excludes that socket only', async (t) => {
    const channel = uniqueChannel('', 'exclude');
    const a = await connectedPusher(t, gw);
    const b = await connectedPusher(t, gw);
    const { channel: subA } = await subscribe(a.pusher, channel);
    const { channel: subB } = await subscribe(b.pusher, channel);
    const gotA = recordBind(subA, 'update');
    const gotB = waitBind(subB, 'update');
    await api.trigger(channel, 'update', { n: 1 }, { socket_id: a.socketId });
    assert.deepEqual(await gotB, { n: 1 });
    await flush(subA);
    assert.deepEqual(gotA.items, []);
  });

  it('trigger with info returns subscription_count and, on presence channels, user_count', async (t) => {
    const presence = uniqueChannel('presence-', 'info');
    const open = uniqueChannel('', 'info');
    for (const id of ['alice', 'bob', 'bob']) {
      const { pusher } = await connectedPusher(t, gw, user(id));
      await subscribe(pusher, presence);
    }
    const { pusher } = await connectedPusher(t, gw);
    await subscribe(pusher, open);

    const reply = await body(api.trigger([presence, open], 'counted', {}, { info: 'subscription_count,user_count' }));
    assert.deepEqual(reply.channels?.[presence], { subscription_count: 3, user_count: 2 }, JSON.stringify(reply));
    assert.equal(reply.channels?.[open]?.subscription_count, 1, JSON.stringify(reply));
    assert.equal(reply.channels?.[open]?.user_count, undefined, `user_count is for presence channels: ${JSON.stringify(reply)}`);
  });

  it('triggerBatch of 10 delivers them in order; a batch of 11 is refused with 400, none delivered', async (t) => {
    const channel = uniqueChannel('', 'batch');
    const second = uniqueChannel('private-', 'batch');
    const { pusher } = await connectedPusher(t, gw);
    const { channel: sub } = await subscribe(pusher, channel);
    const { channel: sub2 } = await subscribe(pusher, second);
    const received = recordBind(sub, 'item');
    const received2 = recordBind(sub2, 'item');
    const batch = Array.from({ length: 10 }, (_, n) => ({ channel: n === 9 ? second : channel, name: 'item', data: { n } }));
    const res = await api.triggerBatch(batch);
    assert.equal(res.status, 200);
    assert.deepEqual((await received.until(9)).map((d) => d.n), [0, 1, 2, 3, 4, 5, 6, 7, 8]);
    assert.deepEqual((await received2.until(1)).map((d) => d.n), [9]);

    const eleven = Array.from({ length: 11 }, (_, n) => ({ channel, name: 'item', data: { n: 100 + n } }));
    const refused = await statusOf(api.triggerBatch(eleven));
    assert.equal(refused.status, 400, refused.body);
    await flush(sub);
    assert.equal(received.items.length, 9, `nothing of the refused batch: ${JSON.stringify(received.items)}`);
  });

  it('GET /channels with filter_by_prefix=presence- and info=user_count lists occupied presence channels', async (t) => {
    const room1 = uniqueChannel('presence-', 'list');
    const room2 = uniqueChannel('presence-', 'list');
    const open = uniqueChannel('', 'list');
    for (const [id, name] of [['a', room1], ['b', room1], ['c', room2]]) {
      const { pusher } = await connectedPusher(t, gw, user(id));
      await subscribe(pusher, name);
    }
    const { pusher } = await connectedPusher(t, gw);
    await subscribe(pusher, open);

    const reply = await body(api.get({ path: '/channels', params: { filter_by_prefix: 'presence-', info: 'user_count' } }));
    assert.deepEqual(reply.channels?.[room1], { user_count: 2 }, JSON.stringify(reply));
    assert.deepEqual(reply.channels?.[room2], { user_count: 1 }, JSON.stringify(reply));
    for (const name of Object.keys(reply.channels)) assert.ok(name.startsWith('presence-'), `only presence-: ${name}`);

    const everything = await body(api.get({ path: '/channels' }));
    assert.ok(everything.channels?.[open], `the public channel is listed: ${JSON.stringify(everything)}`);
    assert.ok(everything.channels?.[room1], `the presence channel is listed: ${JSON.stringify(everything)}`);
  });

  it('GET /channels/<name> answers occupied, subscription_count and user_count; vacated channels are not occupied', async (t) => {
    const room = uniqueChannel('presence-', 'one');
    const open = uniqueChannel('', 'one');
    const clients = [];
    for (const id of ['x', 'y', 'y']) {
      const client = await connectedPusher(t, gw, user(id));
      await subscribe(client.pusher, room);
      clients.push(client);
    }
    await subscribe(clients[0].pusher, open);

    const params = { info: 'subscription_count,user_count' };
    assert.deepEqual(await body(api.get({ path: `/channels/${room}`, params })),
      { occupied: true, subscription_count: 3, user_count: 2 });
    const openInfo = await body(api.get({ path: `/channels/${open}`, params: { info: 'subscription_count' } }));
    assert.deepEqual(openInfo, { occupied: true, subscription_count: 1 });

    for (const { pusher } of clients) pusher.disconnect();
    await eventually(async () => {
      const info = await body(api.get({ path: `/channels/${room}`, params: { info: 'subscription_count' } }));
      assert.equal(info.occupied, false, JSON.stringify(info));
    });
    const never = await body(api.get({ path: `/channels/${uniqueChannel('', 'never')}` }));
    assert.equal(never.occupied, false, JSON.stringify(never));
  });

  it('GET /channels/presence-x/users lists each user once', async (t) => {
    const room = uniqueChannel('presence-', 'users');
    for (const id of ['u1', 'u2', 'u2']) {
      const { pusher } = await connectedPusher(t, gw, user(id));
      await subscribe(pusher, room);
    }
    const reply = await body(api.get({ path: `/channels/${room}/users` }));
    assert.deepEqual(sortedIds(reply.users), ['u1', 'u2']);
    for (const u of reply.users) assert.deepEqual(Object.keys(u), ['id'], JSON.stringify(reply));
  });

  it('event data of 10240 bytes is delivered; 10241 bytes are refused with 413', async (t) => {
    const channel = uniqueChannel('', 'size');
    const { pusher } = await connectedPusher(t, gw);
    const { channel: sub } = await subscribe(pusher, channel);
    const received = recordBind(sub, 'blob');
    const fits = 'x'.repeat(10_240);
    const got = received.until(1);
    assert.equal((await api.trigger(channel, 'blob', fits)).status, 200);
    assert.equal((await got)[0], fits);

    const refused = await statusOf(api.trigger(channel, 'blob', 'y'.repeat(10_241)));
    assert.equal(refused.status, 413, refused.body);
    await flush(sub);
    assert.equal(received.items.length, 1);
  });

  it('a channel name over 200 characters is refused with 400', async () => {
    const name = uniqueChannel('', 'long').padEnd(201, 'z');
    const refused = await statusOf(api.post({ path: '/events', body: { name: 'e', data: '{}', channels: [name] } }));
    assert.equal(refused.status, 400, refused.body);
  });

  it('a wrong secret is refused with 401, an unknown app id with 404, nothing delivered', async (t) => {
    const channel = uniqueChannel('', 'auth');
    const { pusher } = await connectedPusher(t, gw);
    const { channel: sub } = await subscribe(pusher, channel);
    const received = recordBind(sub, 'forged');

    const wrongSecret = serverSdk(gw, { ...APPS.main, secret: 'not-the-secret' });
    const forged = await statusOf(wrongSecret.trigger(channel, 'forged', {}));
    assert.equal(forged.status, 401, forged.body);
    assert.equal((await statusOf(wrongSecret.get({ path: '/channels' }))).status, 401);
    // Signed with the other app's secret for app-id's path.
    const crossed = serverSdk(gw, { ...APPS.main, key: APPS.other.key, secret: APPS.other.secret });
    assert.equal((await statusOf(crossed.trigger(channel, 'forged', {}))).status, 401);

    const unknown = serverSdk(gw, { ...APPS.main, id: 'no-such-app' });
    const missing = await statusOf(unknown.trigger(channel, 'forged', {}));
    assert.equal(missing.status, 404, missing.body);

    await flush(sub);
    assert.deepEqual(received.items, []);
  });

  it('a stale auth_timestamp is refused with 401', async () => {
    const channel = uniqueChannel('', 'stale');
    const realNow = Date.now;
    Date.now = () => realNow() - 3_600_000; // the SDK signs with auth_timestamp = now
    let stale;
    try {
      stale = api.trigger(channel, 'old', {});
    } finally {
      Date.now = realNow;
    }
    const res = await statusOf(stale);
    assert.equal(res.status, 401, res.body);
  });
});
