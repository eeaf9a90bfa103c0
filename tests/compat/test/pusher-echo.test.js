'use strict';
// Laravel Echo 2.x (broadcaster 'pusher') over pusher-js: public, private and presence
// channels as a Laravel front end uses them, events triggered as Laravel's broadcaster does
// (through the HTTP API), whispers (client events).

const { describe, it, before, after } = require('node:test');
const assert = require('node:assert/strict');
const { startGateway } = require('../lib/gateway');
const { uniqueChannel } = require('../lib/clients');
const {
  PusherClient, signer, serverSdk, newPusher, connected, sortedIds,
} = require('../lib/pusher');

let gw;
let api;
// laravel-echo 2.5.0's CommonJS build (dist/echo.common.js) sits in a "type": "module"
// package, so require() loads it as ESM and fails; its ES module build imports fine.
let Echo;
before(async () => {
  Echo = (await import('laravel-echo')).default;
  gw = await startGateway();
  api = serverSdk(gw);
});
after(() => gw?.stop());

/** An Echo over a pusher-js client of user `id` (presence channel_data and signin). */
async function echoFor(t, id) {
  const pusher = newPusher(t, gw, { user: { user_id: id, user_info: { id, name: `User ${id}` } } });
  const echo = new Echo({ broadcaster: 'pusher', client: pusher });
  await connected(pusher);
  return echo;
}

/** A promise for the next call of an Echo callback; `register(cb)` hands Echo the callback. */
function nextCall(register, { timeout = 5_000, what = 'the Echo callback' } = {}) {
  return new Promise((resolve, reject) => {
    let done = false;
    const timer = setTimeout(() => {
      done = true;
      reject(new Error(`timed out after ${timeout} ms waiting for ${what}`));
    }, timeout);
    register((...args) => {
      if (done) return;
      done = true;
      clearTimeout(timer);
      resolve(args);
    });
  });
}

/** Resolves when the Echo channel is subscribed; rejects on its error callback. */
function echoSubscribed(channel, what) {
  // Echo's subscribed() hears only a subscription_succeeded that comes after it.
  if (channel.subscription?.subscribed) return Promise.resolve();
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`timed out waiting for Echo to subscribe to ${what}`)), 5_000);
    channel.subscribed(() => {
      clearTimeout(timer);
      resolve();
    });
    channel.error((err) => {
      clearTimeout(timer);
      reject(new Error(`Echo could not subscribe to ${what}: ${JSON.stringify(err)}`));
    });
  });
}

describe('pusher laravel echo', () => {
  it('Echo.channel().listen(".order.shipped") gets the broadcast event', async (t) => {
    const echo = await echoFor(t, '1');
    assert.equal(echo.connectionStatus(), 'connected');
    assert.match(echo.socketId(), /^\d+\.\d+$/);
    const name = uniqueChannel('', 'orders');
    const channel = echo.channel(name);
    const shipped = nextCall((cb) => channel.listen('.order.shipped', cb), { what: '.order.shipped' });
    await echoSubscribed(channel, name);
    await api.trigger(name, 'order.shipped', { order: { id: 5 } });
    assert.deepEqual((await shipped)[0], { order: { id: 5 } });
  });

  it('listen without the leading dot uses the App\\Events namespace', async (t) => {
    const echo = await echoFor(t, '2');
    const name = uniqueChannel('', 'ns');
    const channel = echo.channel(name);
    const got = nextCall((cb) => channel.listen('OrderShipped', cb), { what: 'App\\Events\\OrderShipped' });
    await echoSubscribed(channel, name);
    await api.trigger(name, 'App\\Events\\OrderShipped', { id: 9 });
    assert.deepEqual((await got)[0], { id: 9 });
  });

  it('Echo.private("orders.1") subscribes to private-orders.1 with the signature and gets events', async (t) => {
    const echo = await echoFor(t, '3');
    const name = uniqueChannel('orders.', 'p');
    const channel = echo.private(name);
    const updated = nextCall((cb) => channel.listen('.order.updated', cb), { what: '.order.updated' });
    await echoSubscribed(channel, `private-${name}`);
    await api.trigger(`private-${name}`, 'order.updated', { status: 'paid' });
    assert.deepEqual((await updated)[0], { status: 'paid' });
  });

  it('Echo.private refuses to subscribe when the signature is forged: the error callback fires', async (t) => {
    const pusher = newPusher(t, gw, { authorize: (socketId, channelName) => signer().authorizeChannel('1.1', channelName) });
    const echo = new Echo({ broadcaster: 'pusher', client: pusher });
    await connected(pusher);
    const name = uniqueChannel('orders.', 'forged');
    await assert.rejects(echoSubscribed(echo.private(name), `private-${name}`), /could not subscribe/);
  });

  it('Echo.join("room.1").here/joining/leaving follow the presence channel', async (t) => {
    const room = uniqueChannel('room.', 'r');
    const alice = await echoFor(t, 'alice');
    const aliceRoom = alice.join(room);
    const here = nextCall((cb) => aliceRoom.here(cb), { what: 'here()' });
    const [firstHere] = await here;
    assert.deepEqual(firstHere, [{ id: 'alice', name: 'User alice' }]);

    const joining = nextCall((cb) => aliceRoom.joining(cb), { what: 'joining()' });
    const bob = await echoFor(t, 'bob');
    const bobRoom = bob.join(room);
    const bobHere = nextCall((cb) => bobRoom.here(cb), { what: "bob's here()" });
    assert.deepEqual((await joining)[0], { id: 'bob', name: 'User bob' });
    assert.deepEqual(sortedIds((await bobHere)[0]), ['alice', 'bob']);

    const leaving = nextCall((cb) => aliceRoom.leaving(cb), { what: 'leaving()' });
    bob.leave(room);
    assert.deepEqual((await leaving)[0], { id: 'bob', name: 'User bob' });
  });

  it('whisper on a private channel reaches listenForWhisper of the others, not the sender', async (t) => {
    const name = uniqueChannel('chat.', 'w');
    const alice = await echoFor(t, 'alice');
    const bob = await echoFor(t, 'bob');
    const aliceChannel = alice.private(name);
    const bobChannel = bob.private(name);
    await Promise.all([
      echoSubscribed(aliceChannel, `private-${name}`),
      echoSubscribed(bobChannel, `private-${name}`),
    ]);
    const echoed = [];
    aliceChannel.listenForWhisper('typing', (data) => echoed.push(data));
    const typing = nextCall((cb) => bobChannel.listenForWhisper('typing', cb), { what: 'the whisper' });
    aliceChannel.whisper('typing', { name: 'alice' });
    assert.deepEqual((await typing)[0], { name: 'alice' });
    // A broadcast after it is alice's marker.
    const marker = nextCall((cb) => aliceChannel.listen('.marker', cb), { what: 'the marker' });
    await api.trigger(`private-${name}`, 'marker', {});
    await marker;
    assert.deepEqual(echoed, []);
  });

  it('Echo built with the Pusher option (not client) connects and listens too', async (t) => {
    const echo = new Echo({
      broadcaster: 'pusher',
      Pusher: PusherClient,
      key: 'app-key',
      wsHost: '127.0.0.1',
      wsPort: gw.port,
      forceTLS: false,
      enabledTransports: ['ws'],
      cluster: 'x',
    });
    t.after(() => echo.disconnect());
    await connected(echo.connector.pusher);
    const name = uniqueChannel('', 'opt');
    const channel = echo.channel(name);
    const got = nextCall((cb) => channel.listen('.hello', cb), { what: '.hello' });
    await echoSubscribed(channel, name);
    await api.trigger(name, 'hello', { ok: 1 });
    assert.deepEqual((await got)[0], { ok: 1 });
  });
});
