'use strict';
// Pusher channels: public, private (signed), private-encrypted (opaque to the server),
// cache channels (the newest event replayed, else pusher:cache_miss), name length.

const { describe, it, before, after } = require('node:test');
const assert = require('node:assert/strict');
const { startGateway } = require('../lib/gateway');
const { uniqueChannel } = require('../lib/clients');
const { eventually } = require('../lib/events');
const {
  APPS, serverSdk, signer, connectedPusher, waitBind, recordBind, subscribe, subscribed,
  subscribeRefused, body, hmac, rawSocket,
} = require('../lib/pusher');

let gw;
let api;
before(async () => {
  gw = await startGateway();
  api = serverSdk(gw);
});
after(() => gw?.stop());

/** Records the names (and data) of every event on `channel`, pusher: ones included, in order. */
function sequence(channel) {
  const items = [];
  channel.bind_global((event, data) => items.push({ event, data }));
  return items;
}

describe('pusher channels', () => {
  it('a public channel gets events triggered through the HTTP API, data as a JSON string on the wire', async (t) => {
    const channel = uniqueChannel('', 'news');
    const { pusher } = await connectedPusher(t, gw);
    const { channel: sub } = await subscribe(pusher, channel);
    const raw = rawSocket(t, gw);
    await raw.subscribe(channel);

    const got = waitBind(sub, 'headline');
    const res = await api.trigger(channel, 'headline', { title: 'hello', n: 1 });
    assert.equal(res.status, 200);
    assert.deepEqual(await got, { title: 'hello', n: 1 });

    const frame = await raw.event('headline', channel);
    assert.equal(typeof JSON.parse(frame.raw).data, 'string', `data must stay a JSON string: ${frame.raw}`);
    assert.deepEqual(frame.data, { title: 'hello', n: 1 });

    const plain = waitBind(sub, 'plain');
    await api.trigger(channel, 'plain', 'just text, not JSON');
    assert.equal(await plain, 'just text, not JSON');
  });

  it('after unsubscribe no more events arrive and the channel is vacated', async (t) => {
    const channel = uniqueChannel('', 'leaving');
    const marker = uniqueChannel('', 'marker');
    const { pusher } = await connectedPusher(t, gw);
    const { channel: sub } = await subscribe(pusher, channel);
    const { channel: markerSub } = await subscribe(pusher, marker);
    const occupied = async (expected) => {
      const info = await body(api.get({ path: `/channels/${channel}`, params: { info: 'subscription_count' } }));
      assert.equal(info.occupied, expected, JSON.stringify(info));
    };
    await occupied(true);

    const received = recordBind(sub, 'late');
    pusher.unsubscribe(channel);
    await eventually(() => occupied(false));
    await api.trigger(channel, 'late', { n: 1 });
    const markerGot = waitBind(markerSub, 'mark');
    await api.trigger(marker, 'mark', {});
    await markerGot;
    assert.deepEqual(received.items, []);
  });

  it('a private channel subscribes with a valid signature and gets events', async (t) => {
    const channel = uniqueChannel('private-', 'orders');
    const { pusher } = await connectedPusher(t, gw);
    const { channel: sub } = await subscribe(pusher, channel);
    const got = waitBind(sub, 'updated');
    await api.trigger(channel, 'updated', { id: 7 });
    assert.deepEqual(await got, { id: 7 });
  });

  const forgeries = {
    'signed with another secret': (socketId, channel) =>
      ({ auth: `${APPS.main.key}:${hmac('not-the-secret', `${socketId}:${channel}`)}` }),
    'signed for another socket id': (socketId, channel) =>
      signer().authorizeChannel('1234.5678', channel),
    'signed for another channel': (socketId, channel) =>
      signer().authorizeChannel(socketId, `${channel}-other`),
    'signed with another app key and secret': (socketId, channel) =>
      signer(APPS.other).authorizeChannel(socketId, channel),
    'an empty auth': () => ({ auth: '' }),
  };
  for (const [what, authorize] of Object.entries(forgeries)) {
    it(`a private channel refuses a signature ${what}: subscription_error, no events`, async (t) => {
      const channel = uniqueChannel('private-', 'forged');
      const { pusher } = await connectedPusher(t, gw, { authorize });
      const error = await subscribeRefused(pusher, channel);
      assert.ok(error, 'subscription_error data');
      const info = await body(api.get({ path: `/channels/${channel}`, params: { info: 'subscription_count' } }));
      assert.equal(info.occupied, false, `a refused subscriber must not occupy the channel: ${JSON.stringify(info)}`);
    });
  }

  it('a presence channel refuses channel_data other than the signed one', async (t) => {
    const channel = uniqueChannel('presence-', 'forged');
    const authorize = (socketId, name) => {
      const signed = signer().authorizeChannel(socketId, name, { user_id: 'alice' });
      return { ...signed, channel_data: JSON.stringify({ user_id: 'admin' }) };
    };
    const { pusher } = await connectedPusher(t, gw, { authorize });
    await subscribeRefused(pusher, channel);
  });

  it('a raw subscribe to a private channel without auth is refused', async (t) => {
    const channel = uniqueChannel('private-', 'noauth');
    const raw = rawSocket(t, gw);
    await raw.socketId();
    raw.send('pusher:subscribe', { channel });
    const answer = await raw.next((f) => (f.channel === channel && /subscription_(succeeded|error)$/.test(f.event)) ||
      f.event === 'pusher:error', { what: `the answer to subscribing to ${channel}` });
    assert.notEqual(answer.event, 'pusher_internal:subscription_succeeded', answer.raw);
  });

  it('private-encrypted: the server relays the ciphertext untouched and pusher-js decrypts it', async (t) => {
    const channel = uniqueChannel('private-encrypted-', 'secret');
    const { pusher } = await connectedPusher(t, gw);
    const { channel: sub } = await subscribe(pusher, channel);
    const raw = rawSocket(t, gw);
    await raw.subscribe(channel);

    const got = waitBind(sub, 'sealed');
    await api.trigger(channel, 'sealed', { card: '4111', amount: 12 });
    assert.deepEqual(await got, { card: '4111', amount: 12 });
    const frame = await raw.event('sealed', channel);
    assert.equal(typeof frame.data?.nonce, 'string', `raw frame: ${frame.raw}`);
    assert.equal(typeof frame.data?.ciphertext, 'string', `raw frame: ${frame.raw}`);
    assert.ok(!frame.raw.includes('4111'), 'the plaintext never reaches the wire');
  });

  for (const prefix of ['cache-', 'private-cache-', 'presence-cache-']) {
    it(`${prefix}: the newest event is replayed right after subscription_succeeded`, async (t) => {
      const channel = uniqueChannel(prefix, 'ticker');
      await api.trigger(channel, 'price', { n: 1 });
      await api.trigger(channel, 'price', { n: 2 });
      const { pusher } = await connectedPusher(t, gw, { user: { user_id: 'cacher', user_info: {} } });
      const sub = pusher.subscribe(channel);
      const events = sequence(sub);
      const replayed = waitBind(sub, 'price', { failOn: ['pusher:cache_miss'] });
      await subscribed(sub);
      assert.deepEqual(await replayed, { n: 2 }, 'only the newest event');
      const names = events.map((e) => e.event).filter((e) => e !== 'pusher:member_added');
      assert.deepEqual(names.slice(0, 2), ['pusher:subscription_succeeded', 'price'], JSON.stringify(events));

      // Later events arrive live as usual.
      const live = waitBind(sub, 'price', { filter: (d) => d.n === 3 });
      await api.trigger(channel, 'price', { n: 3 });
      await live;
      assert.deepEqual(events.filter((e) => e.event === 'price').map((e) => e.data), [{ n: 2 }, { n: 3 }]);
    });

    it(`${prefix}: a channel with no event yet answers pusher:cache_miss`, async (t) => {
      const channel = uniqueChannel(prefix, 'empty');
      const { pusher } = await connectedPusher(t, gw, { user: { user_id: 'misser', user_info: {} } });
      const sub = pusher.subscribe(channel);
      const events = sequence(sub);
      const miss = waitBind(sub, 'pusher:cache_miss');
      await subscribed(sub);
      await miss;
      const names = events.map((e) => e.event).filter((e) => e !== 'pusher:member_added');
      assert.deepEqual(names, ['pusher:subscription_succeeded', 'pusher:cache_miss']);
    });
  }

  it('a public channel has no cache: no replay and no cache_miss', async (t) => {
    const channel = uniqueChannel('', 'nocache');
    const marker = uniqueChannel('', 'marker');
    await api.trigger(channel, 'old', { n: 1 });
    const { pusher } = await connectedPusher(t, gw);
    const sub = pusher.subscribe(channel);
    const events = sequence(sub);
    await subscribed(sub);
    const { channel: markerSub } = await subscribe(pusher, marker);
    const markerGot = waitBind(markerSub, 'mark');
    await api.trigger(marker, 'mark', {});
    await markerGot;
    assert.deepEqual(events.map((e) => e.event), ['pusher:subscription_succeeded']);
  });

  it('channel names: 200 characters subscribe, 201 are refused', async (t) => {
    const base = uniqueChannel('', 'long');
    const ok = base + 'x'.repeat(200 - base.length);
    const tooLong = base + 'y'.repeat(201 - base.length);
    const raw = rawSocket(t, gw);
    await raw.subscribe(ok);
    raw.send('pusher:subscribe', { channel: tooLong });
    const answer = await raw.next((f) => f.channel === tooLong || f.event === 'pusher:error',
      { what: `the answer to subscribing to a ${tooLong.length}-character name` });
    assert.notEqual(answer.event, 'pusher_internal:subscription_succeeded', answer.raw);
  });
});
