'use strict';
// Pusher client events (client-*): only on private/presence channels the socket joined, never
// echoed to the sender, user_id on presence channels, 10/s per connection (close 4301 beyond),
// refused when the app disables them.

const { describe, it, before, after } = require('node:test');
const assert = require('node:assert/strict');
const { startGateway } = require('../lib/gateway');
const { uniqueChannel } = require('../lib/clients');
const {
  APPS, serverSdk, connectedPusher, waitBind, waitState, recordBind, subscribe, nextErrorCode,
  errorsOf, rawSocket,
} = require('../lib/pusher');

let gw;
let api;
before(async () => {
  gw = await startGateway();
  api = serverSdk(gw);
});
after(() => gw?.stop());

const user = (id) => ({ user: { user_id: id, user_info: { name: id } } });

/**
 * Triggers `marker` on `channel` through the HTTP API and waits until `sub` got it: every event
 * the server had accepted for `channel` before has reached `sub` by then.
 */
async function flush(sub, channel) {
  const got = waitBind(sub, 'server-marker', { what: `the marker on ${channel}` });
  await api.trigger(channel, 'server-marker', {});
  await got;
}

/** Two connected pusher-js clients of `app` subscribed to `channel`. */
async function pair(t, channel, { app = APPS.main } = {}) {
  const a = await connectedPusher(t, gw, { app, ...user('alice') });
  const b = await connectedPusher(t, gw, { app, ...user('bob') });
  const { channel: subA } = await subscribe(a.pusher, channel);
  const { channel: subB } = await subscribe(b.pusher, channel);
  return { a, b, subA, subB };
}

describe('pusher client events', () => {
  it('on a private channel: delivered to the other subscriber, not echoed to the sender', async (t) => {
    const channel = uniqueChannel('private-', 'chat');
    const { subA, subB } = await pair(t, channel);
    const echoed = recordBind(subA, 'client-typing');
    const got = waitBind(subB, 'client-typing');
    assert.equal(subA.trigger('client-typing', { who: 'alice' }), true, 'pusher-js sent it');
    assert.deepEqual(await got, { who: 'alice' });
    await flush(subA, channel);
    assert.deepEqual(echoed.items, [], 'the sender does not get its own client event');
  });

  it('on a presence channel: the receiver gets the sender user_id as metadata', async (t) => {
    const channel = uniqueChannel('presence-', 'chat');
    const { subA, subB } = await pair(t, channel);
    const received = recordBind(subB, 'client-hello');
    subA.trigger('client-hello', { text: 'hi' });
    await received.until(1);
    assert.deepEqual(received.items, [{ text: 'hi' }]);
    assert.deepEqual(received.metas[0], { user_id: 'alice' });
  });

  it('on a public channel: not delivered', async (t) => {
    const channel = uniqueChannel('', 'public-chat');
    const raw = rawSocket(t, gw);
    await raw.subscribe(channel);
    const b = await connectedPusher(t, gw);
    const { channel: subB } = await subscribe(b.pusher, channel);
    const received = recordBind(subB, 'client-sneaky');
    raw.send('client-sneaky', { n: 1 }, channel);
    await flush(subB, channel);
    assert.deepEqual(received.items, []);
  });

  it('on a private channel the sender did not join: not delivered', async (t) => {
    const channel = uniqueChannel('private-', 'notjoined');
    const raw = rawSocket(t, gw);
    await raw.socketId();
    const b = await connectedPusher(t, gw);
    const { channel: subB } = await subscribe(b.pusher, channel);
    const received = recordBind(subB, 'client-sneaky');
    raw.send('client-sneaky', { n: 1 }, channel);
    // The raw socket's own ping round trip: the server has handled the client event by then.
    raw.send('pusher:ping', {});
    await raw.event('pusher:pong');
    await flush(subB, channel);
    assert.deepEqual(received.items, []);
  });

  it('an app with client events disabled answers pusher:error and delivers nothing', async (t) => {
    const channel = uniqueChannel('private-', 'disabled');
    const { a, subA, subB } = await pair(t, channel, { app: APPS.other });
    const received = recordBind(subB, 'client-nope');
    const refused = waitBind(a.pusher.connection, 'error', {
      filter: (e) => e?.type === 'PusherError',
      what: 'a pusher:error for the refused client event',
    });
    subA.trigger('client-nope', { n: 1 });
    const error = await refused;
    assert.ok(error.data?.message || error.data?.code, `pusher:error data: ${JSON.stringify(error)}`);
    // Trigger a marker through other-id's API.
    const otherApi = serverSdk(gw, APPS.other);
    const marker = waitBind(subB, 'server-marker');
    await otherApi.trigger(channel, 'server-marker', {});
    await marker;
    assert.deepEqual(received.items, []);
  });

  it('10 client events at once are all delivered in order; the connection stays', async (t) => {
    const channel = uniqueChannel('private-', 'burst-ok');
    const { a, subA, subB } = await pair(t, channel);
    const received = recordBind(subB, 'client-n');
    for (let n = 0; n < 10; n++) subA.trigger('client-n', { n });
    const items = await received.until(10);
    assert.deepEqual(items.map((d) => d.n), [0, 1, 2, 3, 4, 5, 6, 7, 8, 9]);
    await flush(subA, channel);
    assert.equal(a.pusher.connection.state, 'connected');
    assert.deepEqual(errorsOf(a.pusher), []);
  });

  it('more than 10 client events in a second close the connection with 4301', async (t) => {
    const channel = uniqueChannel('private-', 'burst');
    const { a, subA, subB } = await pair(t, channel);
    const received = recordBind(subB, 'client-n');
    const closed = nextErrorCode(a.pusher, { filter: (code) => code === 4301 });
    for (let n = 0; n < 30; n++) subA.trigger('client-n', { n });
    assert.equal(await closed, 4301);
    // 4301 is not a reconnect instruction: pusher-js stays away.
    await waitState(a.pusher, ['disconnected', 'failed']);
    await flush(subB, channel);
    const delivered = received.items.map((d) => d.n);
    assert.ok(delivered.length <= 10, `at most 10 delivered, got ${delivered.length}`);
    assert.deepEqual(delivered, [...Array(delivered.length).keys()], 'those delivered are the first ones, in order');
  });

  it('a client event larger than max_event_bytes (10240) is not delivered', async (t) => {
    const channel = uniqueChannel('private-', 'big');
    const { subA, subB } = await pair(t, channel);
    const received = recordBind(subB, 'client-big');
    subA.trigger('client-big', { blob: 'x'.repeat(11_000) });
    subA.trigger('client-big', { blob: 'small' });
    await received.until(1);
    await flush(subB, channel);
    assert.deepEqual(received.items, [{ blob: 'small' }]);
  });
});
