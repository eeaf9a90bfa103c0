'use strict';
// Server-initiated unsubscribe and disconnect through the HTTP API.

const { describe, it, before, after } = require('node:test');
const assert = require('node:assert/strict');
const { startGateway, result } = require('../lib/gateway');
const { ENCODINGS, connectedClient, subscribe, uniqueChannel } = require('../lib/clients');
const { waitEvent } = require('../lib/events');
const { connectionToken } = require('../lib/tokens');

let gw;
before(async () => {
  gw = await startGateway();
});
after(() => gw?.stop());

let users = 0;
const uniqueUser = (name) => `${name}-${++users}-${process.pid}`;

for (const enc of ENCODINGS) {
  describe(`server actions [${enc.name}]`, () => {
    it('API unsubscribe ends the subscription with code 2000; the client stays connected', async (t) => {
      const user = uniqueUser('erin');
      const { client } = await connectedClient(t, gw, enc, { token: connectionToken(user) });
      const channel = uniqueChannel('', 'kick');
      const { sub } = await subscribe(client, channel);

      const unsubscribed = waitEvent(sub, 'unsubscribed');
      const reply = result(await gw.api('unsubscribe', { channel, user }));
      assert.deepEqual(reply, {});
      const ctx = await unsubscribed;
      assert.equal(ctx.code, 2000);
      assert.equal(sub.state, 'unsubscribed');
      assert.equal(client.state, 'connected');
    });

    it('API disconnect closes the connection with 3503 and no reconnect', async (t) => {
      const user = uniqueUser('frank');
      const { client } = await connectedClient(t, gw, enc, { token: connectionToken(user) });
      // A reconnecting close would emit 'connecting' instead.
      const disconnected = waitEvent(client, 'disconnected', { failOn: ['connecting'] });

      const reply = result(await gw.api('disconnect', { user }));
      assert.deepEqual(reply, {});
      const ctx = await disconnected;
      assert.equal(ctx.code, 3503);
      assert.equal(client.state, 'disconnected');
    });

    it('API disconnect with a custom code and reason', async (t) => {
      const user = uniqueUser('grace');
      const { client } = await connectedClient(t, gw, enc, { token: connectionToken(user) });
      const disconnected = waitEvent(client, 'disconnected', { failOn: ['connecting'] });
      result(await gw.api('disconnect', { user, disconnect: { code: 4501, reason: 'go away' } }));
      const ctx = await disconnected;
      assert.deepEqual({ code: ctx.code, reason: ctx.reason }, { code: 4501, reason: 'go away' });
      assert.equal(client.state, 'disconnected');
    });

    it('API disconnect of one client id leaves the same user\'s other connection alone', async (t) => {
      const user = uniqueUser('heidi');
      const token = connectionToken(user);
      const first = await connectedClient(t, gw, enc, { token });
      const second = await connectedClient(t, gw, enc, { token });
      const disconnected = waitEvent(first.client, 'disconnected', { failOn: ['connecting'] });
      result(await gw.api('disconnect', { user, client: first.clientId }));
      assert.equal((await disconnected).code, 3503);
      assert.equal(second.client.state, 'connected');
      // The surviving connection still works.
      const channel = uniqueChannel('', 'survivor');
      await subscribe(second.client, channel);
    });
  });
}
