'use strict';
// Presence, presence stats and join/leave pushes.

const { describe, it, before, after } = require('node:test');
const assert = require('node:assert/strict');
const { startGateway, result } = require('../lib/gateway');
const { ENCODINGS, connectedClient, subscribe, uniqueChannel } = require('../lib/clients');
const { waitEvent, eventually } = require('../lib/events');
const { connectionToken } = require('../lib/tokens');

let gw;
before(async () => {
  gw = await startGateway();
});
after(() => gw?.stop());

const sorted = (values) => [...values].sort();

for (const enc of ENCODINGS) {
  describe(`presence [${enc.name}]`, () => {
    it('presence and presence_stats list an anonymous and a token client', async (t) => {
      const channel = uniqueChannel('', 'lobby');
      const anon = await connectedClient(t, gw, enc);
      const bob = await connectedClient(t, gw, enc, { token: connectionToken('bob') });
      const { sub } = await subscribe(anon.client, channel);
      await subscribe(bob.client, channel);

      // Through the client protocol.
      const { clients } = await sub.presence();
      assert.deepEqual(sorted(Object.keys(clients)), sorted([anon.clientId, bob.clientId]));
      assert.equal(clients[anon.clientId].client, anon.clientId);
      assert.equal(clients[anon.clientId].user, '', `anonymous ClientInfo must carry user "": ${JSON.stringify(clients[anon.clientId])}`);
      assert.equal(clients[bob.clientId].client, bob.clientId);
      assert.equal(clients[bob.clientId].user, 'bob');
      const stats = await sub.presenceStats();
      // As in Centrifugo, the anonymous user "" counts as one distinct user.
      assert.deepEqual({ numClients: stats.numClients, numUsers: stats.numUsers }, { numClients: 2, numUsers: 2 });

      // Through the HTTP API.
      const { presence } = result(await gw.api('presence', { channel }));
      assert.deepEqual(sorted(Object.keys(presence)), sorted([anon.clientId, bob.clientId]));
      assert.equal(presence[anon.clientId].user ?? '', '');
      assert.equal(presence[bob.clientId].user, 'bob');
      const apiStats = result(await gw.api('presence_stats', { channel }));
      assert.deepEqual(apiStats, { num_clients: 2, num_users: 2 });

      // Presence is cleaned up when a client goes away.
      bob.client.disconnect();
      await eventually(async () => {
        assert.deepEqual(result(await gw.api('presence_stats', { channel })), { num_clients: 1, num_users: 1 });
      });
      const after = await sub.presence();
      assert.deepEqual(Object.keys(after.clients), [anon.clientId]);
    });

    it('join and leave pushes reach the other subscriber', async (t) => {
      const channel = uniqueChannel('', 'joinleave');
      const watcher = await connectedClient(t, gw, enc);
      const { sub: watcherSub } = await subscribe(watcher.client, channel, { joinLeave: true });
      const carol = await connectedClient(t, gw, enc, { token: connectionToken('carol') });
      const isCarol = (ctx) => ctx.info?.client === carol.clientId;

      const joined = waitEvent(watcherSub, 'join', { filter: isCarol });
      const { sub: carolSub } = await subscribe(carol.client, channel, { joinLeave: true });
      const join = await joined;
      assert.equal(join.channel, channel);
      assert.equal(join.info.user, 'carol');

      const left = waitEvent(watcherSub, 'leave', { filter: isCarol });
      carolSub.unsubscribe();
      const leave = await left;
      assert.equal(leave.channel, channel);
      assert.equal(leave.info.user, 'carol');
    });
  });
}
