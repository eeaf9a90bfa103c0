'use strict';
// Connection establishment: anonymous, JWT, refused tokens, expired tokens, token `channels`.

const { describe, it, before, after } = require('node:test');
const assert = require('node:assert/strict');
const { disconnectedCodes } = require('centrifuge');
const { startGateway, result } = require('../lib/gateway');
const { ENCODINGS, newClient, connect, connectedClient, subscribe, uniqueChannel } = require('../lib/clients');
const { waitEvent, record } = require('../lib/events');
const { connectionToken } = require('../lib/tokens');

let gw;
before(async () => {
  gw = await startGateway();
});
after(() => gw?.stop());

/** Starts connecting and resolves with the 'disconnected' context; fails if it connects. */
function expectDisconnected(client) {
  const disconnected = waitEvent(client, 'disconnected', { failOn: ['connected'] });
  client.connect();
  return disconnected;
}

for (const enc of ENCODINGS) {
  describe(`connect [${enc.name}]`, () => {
    it('connects anonymously without a token (user is "")', async (t) => {
      const client = newClient(t, gw, enc);
      const ctx = await connect(client);
      assert.equal(client.state, 'connected');
      assert.equal(ctx.transport, 'websocket');
      assert.ok(typeof ctx.client === 'string' && ctx.client !== '', `client id: ${ctx.client}`);

      const channel = uniqueChannel('', 'anon');
      await subscribe(client, channel);
      const { presence } = result(await gw.api('presence', { channel }));
      assert.deepEqual(Object.keys(presence), [ctx.client]);
      assert.equal(presence[ctx.client].client, ctx.client);
      assert.equal(presence[ctx.client].user ?? '', '');
    });

    it('connects with a valid token; presence shows the user id and conn info', async (t) => {
      const token = connectionToken('alice', { info: { name: 'Alice' } });
      const { client, clientId } = await connectedClient(t, gw, enc, { token });
      assert.ok(clientId !== '', 'client id must be non-empty');

      const channel = uniqueChannel('', 'token');
      const { sub } = await subscribe(client, channel);

      const { presence } = result(await gw.api('presence', { channel }));
      assert.deepEqual(Object.keys(presence), [clientId]);
      assert.equal(presence[clientId].user, 'alice');
      assert.deepEqual(presence[clientId].conn_info, { name: 'Alice' });

      const { clients } = await sub.presence();
      assert.deepEqual(Object.keys(clients), [clientId]);
      assert.equal(clients[clientId].user, 'alice');
      assert.equal(clients[clientId].client, clientId);
    });

    it('refuses a token signed with another secret: disconnected with 3500', async (t) => {
      const client = newClient(t, gw, enc, { token: connectionToken('mallory', { secret: 'not-the-secret' }) });
      const ctx = await expectDisconnected(client);
      assert.equal(ctx.code, 3500);
      assert.equal(client.state, 'disconnected');
    });

    it('refuses an unsigned alg:none token: disconnected with 3500', async (t) => {
      const client = newClient(t, gw, enc, { token: connectionToken('mallory', { alg: 'none' }) });
      const ctx = await expectDisconnected(client);
      assert.equal(ctx.code, 3500);
      assert.equal(client.state, 'disconnected');
    });

    it('expired token without getToken: error 109, then disconnected (unauthorized)', async (t) => {
      const client = newClient(t, gw, enc, { token: connectionToken('bob', { ttl: -60 }) });
      const errors = record(client, 'error');
      const ctx = await expectDisconnected(client);
      const connectErrors = errors.items.filter((e) => e.type === 'connect');
      assert.ok(connectErrors.length >= 1, `expected a connect error, got ${JSON.stringify(errors.items)}`);
      assert.equal(connectErrors[0].error.code, 109);
      // The SDK has no getToken to renew the token, so it gives up as unauthorized.
      assert.equal(ctx.code, disconnectedCodes.unauthorized);
      assert.equal(client.state, 'disconnected');
    });

    it('expired token with getToken: the SDK fetches a fresh token and connects', async (t) => {
      let calls = 0;
      const getToken = async () => {
        calls += 1;
        return connectionToken('bob');
      };
      const client = newClient(t, gw, enc, { token: connectionToken('bob', { ttl: -60 }), getToken });
      const ctx = await connect(client);
      assert.ok(ctx.client !== '');
      assert.equal(calls, 1);
    });

    it('subscribes server-side to the channels of the token `channels` claim', async (t) => {
      const channel = uniqueChannel('', 'serverside');
      const client = newClient(t, gw, enc, { token: connectionToken('carol', { channels: [channel] }) });
      const subscribed = waitEvent(client, 'subscribed', { filter: (ctx) => ctx.channel === channel });
      await connect(client);
      await subscribed;

      const publication = waitEvent(client, 'publication', { filter: (ctx) => ctx.channel === channel });
      const published = result(await gw.api('publish', { channel, data: { server: 'side' } }));
      const pub = await publication;
      assert.deepEqual(enc.decode(pub.data), { server: 'side' });
      assert.equal(pub.offset, published.offset);
    });
  });
}
