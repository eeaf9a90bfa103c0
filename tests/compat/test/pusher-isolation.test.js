'use strict';
// Channel spaces do not leak: a Pusher app's channels are not the Centrifugo channels of the
// same name, nor reachable under the gateway's internal names, and two Pusher apps do not
// share channels of the same name.

const { describe, it, before, after } = require('node:test');
const assert = require('node:assert/strict');
const { startGateway, result } = require('../lib/gateway');
const { ENCODINGS, connectedClient, uniqueChannel } = require('../lib/clients');
const { waitEvent, record } = require('../lib/events');
const {
  APPS, serverSdk, connectedPusher, waitBind, recordBind, subscribe, body, sortedIds,
} = require('../lib/pusher');

const json = ENCODINGS.find((e) => e.name === 'json');

let gw;
let api;
let otherApi;
before(async () => {
  gw = await startGateway();
  api = serverSdk(gw);
  otherApi = serverSdk(gw, APPS.other);
});
after(() => gw?.stop());

/** A centrifuge-js subscription to `channel`, subscribed. */
async function centrifugeSub(t, channel) {
  const { client } = await connectedClient(t, gw, json);
  const sub = client.newSubscription(channel);
  const subscribed = waitEvent(sub, 'subscribed', { failOn: ['unsubscribed'] });
  sub.subscribe();
  await subscribed;
  return sub;
}

describe('pusher isolation', () => {
  it('a Centrifugo channel and a Pusher channel of the same name are two channels', async (t) => {
    const name = uniqueChannel('', 'shared-name');
    const cSub = await centrifugeSub(t, name);
    const cGot = record(cSub, 'publication');
    const { pusher } = await connectedPusher(t, gw);
    const { channel: pSub } = await subscribe(pusher, name);
    const pGot = recordBind(pSub, 'from-pusher');

    // Pusher -> only the Pusher client.
    const pusherEvent = waitBind(pSub, 'from-pusher');
    await api.trigger(name, 'from-pusher', { via: 'pusher' });
    await pusherEvent;
    // Centrifugo -> only the Centrifugo client; it is also the Centrifugo side's marker.
    const centrifugoPub = waitEvent(cSub, 'publication');
    result(await gw.api('publish', { channel: name, data: { via: 'centrifugo' } }));
    await centrifugoPub;
    assert.deepEqual(cGot.items.map((p) => p.data), [{ via: 'centrifugo' }]);
    // The Pusher side's marker.
    const marker = waitBind(pSub, 'marker');
    await api.trigger(name, 'marker', {});
    await marker;
    assert.deepEqual(pGot.items, [{ via: 'pusher' }]);

    // Each side's channel queries see only its own subscribers.
    const info = await body(api.get({ path: `/channels/${name}`, params: { info: 'subscription_count' } }));
    assert.deepEqual(info, { occupied: true, subscription_count: 1 });
  });

  it('centrifuge-js cannot subscribe to the internal names of a Pusher app\'s channels', async (t) => {
    const name = uniqueChannel('', 'internal');
    const presenceName = uniqueChannel('presence-', 'internal');
    const { pusher } = await connectedPusher(t, gw, { user: { user_id: 'p1', user_info: {} } });
    const { channel: pSub } = await subscribe(pusher, name);
    await subscribe(pusher, presenceName);
    const pGot = recordBind(pSub, 'from-centrifugo');

    const internalNames = [
      `~${APPS.main.id}~b:${name}`,
      `~${APPS.main.id}~p:${presenceName}`,
      `~${APPS.main.id}~:${name}`,
    ];
    const { client } = await connectedClient(t, gw, json);
    for (const internal of internalNames) {
      const sub = client.newSubscription(internal);
      const refused = waitEvent(sub, 'unsubscribed', { failOn: ['subscribed'] });
      sub.subscribe();
      await refused;
      client.removeSubscription(sub);

      const res = await gw.apiRaw('publish', { channel: internal, data: { sneaky: true } });
      assert.ok(res.json?.error, `publish to ${internal} must be refused: HTTP ${res.status} ${res.text}`);
      const presence = await gw.apiRaw('presence', { channel: internal });
      assert.ok(presence.json?.error || Object.keys(presence.json?.result?.presence ?? {}).length === 0,
        `presence of ${internal} must not show the Pusher members: ${presence.text}`);
    }
    const marker = waitBind(pSub, 'marker');
    await api.trigger(name, 'marker', {});
    await marker;
    assert.deepEqual(pGot.items, []);
  });

  it('two Pusher apps do not share channels of the same name', async (t) => {
    const name = uniqueChannel('', 'per-app');
    const mine = await connectedPusher(t, gw);
    const theirs = await connectedPusher(t, gw, { app: APPS.other });
    const { channel: mySub } = await subscribe(mine.pusher, name);
    const { channel: theirSub } = await subscribe(theirs.pusher, name);
    const myGot = recordBind(mySub, 'news');
    const theirGot = recordBind(theirSub, 'news');

    await api.trigger(name, 'news', { app: 'main' });
    await otherApi.trigger(name, 'news', { app: 'other' });
    await myGot.until(1);
    await theirGot.until(1);
    // Markers on both, after.
    const myMarker = waitBind(mySub, 'marker');
    const theirMarker = waitBind(theirSub, 'marker');
    await api.trigger(name, 'marker', {});
    await otherApi.trigger(name, 'marker', {});
    await myMarker;
    await theirMarker;
    assert.deepEqual(myGot.items, [{ app: 'main' }]);
    assert.deepEqual(theirGot.items, [{ app: 'other' }]);
  });

  it('presence and channel queries are per app', async (t) => {
    const room = uniqueChannel('presence-', 'per-app');
    const mine = await connectedPusher(t, gw, { user: { user_id: 'mine', user_info: {} } });
    const { data: members } = await subscribe(mine.pusher, room);
    const theirs = await connectedPusher(t, gw, { app: APPS.other, user: { user_id: 'theirs', user_info: {} } });
    const { data: theirMembers } = await subscribe(theirs.pusher, room);
    assert.deepEqual(Object.keys(theirMembers.members), ['theirs']);
    assert.deepEqual(Object.keys(members.members), ['mine']);

    assert.deepEqual(sortedIds((await body(api.get({ path: `/channels/${room}/users` }))).users), ['mine']);
    assert.deepEqual(sortedIds((await body(otherApi.get({ path: `/channels/${room}/users` }))).users), ['theirs']);
    const list = await body(otherApi.get({ path: '/channels', params: { filter_by_prefix: 'presence-', info: 'user_count' } }));
    assert.deepEqual(list.channels?.[room], { user_count: 1 }, JSON.stringify(list));
  });
});
