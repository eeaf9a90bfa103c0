'use strict';
// Presence, presence stats and join/leave pushes.

const { describe, it, before, after } = require('node:test');
const assert = require('node:assert/strict');
const { startGateway, result } = require('../lib/gateway');
const { ENCODINGS, connectedClient, subscribe, uniqueChannel } = require('../lib/clients');
const { waitEvent, record, eventually } = require('../lib/events');
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

    it('with join_leave_per_user a user joins with its first connection and leaves with its last', async (t) => {
      const channel = uniqueChannel('team:', 'room');
      const watcher = await connectedClient(t, gw, enc);
      const { sub: watcherSub } = await subscribe(watcher.client, channel, { joinLeave: true });
      const joins = record(watcherSub, 'join');
      const leaves = record(watcherSub, 'leave');
      const first = await connectedClient(t, gw, enc, { token: connectionToken('dave') });
      const second = await connectedClient(t, gw, enc, { token: connectionToken('dave') });
      const { sub: firstSub } = await subscribe(first.client, channel);
      const { sub: secondSub } = await subscribe(second.client, channel);
      // Events come in order from one gateway: erin's join comes after dave's.
      const erin = await connectedClient(t, gw, enc, { token: connectionToken('erin') });
      const { sub: erinSub } = await subscribe(erin.client, channel);
      await eventually(() => assert.ok(joins.items.some((j) => j.info.user === 'erin')));
      const daveJoins = joins.items.filter((j) => j.info.user === 'dave');
      assert.deepEqual(daveJoins.map((j) => j.info.client), [first.clientId]);

      // One at a time: each unsubscribe has left presence before the next.
      const clientsPresent = async (n) =>
        eventually(async () => assert.equal((await watcherSub.presenceStats()).numClients, n));
      firstSub.unsubscribe();
      await clientsPresent(3);
      secondSub.unsubscribe();
      await clientsPresent(2);
      erinSub.unsubscribe();
      await eventually(() => assert.ok(leaves.items.some((l) => l.info.user === 'erin')));
      await eventually(() => {
        const daveLeaves = leaves.items.filter((l) => l.info.user === 'dave');
        assert.deepEqual(daveLeaves.map((l) => l.info.client), [second.clientId]);
      });
      const stats = await watcherSub.presenceStats();
      assert.deepEqual({ numClients: stats.numClients, numUsers: stats.numUsers }, { numClients: 1, numUsers: 1 });
    });
  });
}
