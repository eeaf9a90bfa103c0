'use strict';
// The "private" namespace: subscribing needs a subscription token.

const { describe, it, before, after } = require('node:test');
const assert = require('node:assert/strict');
const { startGateway, result } = require('../lib/gateway');
const { ENCODINGS, connectedClient, subscribe, uniqueChannel } = require('../lib/clients');
const { waitEvent } = require('../lib/events');
const { connectionToken, subscriptionToken, signJwt } = require('../lib/tokens');

let gw;
before(async () => {
  gw = await startGateway();
});
after(() => gw?.stop());

for (const enc of ENCODINGS) {
  describe(`private namespace [${enc.name}]`, () => {
    it('rejects a subscription without a token with 103', async (t) => {
      const { client } = await connectedClient(t, gw, enc, { token: connectionToken('dave') });
      const channel = uniqueChannel('private:', 'vault');
      const sub = client.newSubscription(channel);
      const unsubscribed = waitEvent(sub, 'unsubscribed', { failOn: ['subscribed'] });
      sub.subscribe();
      const ctx = await unsubscribed;
      assert.equal(ctx.code, 103);
      assert.equal(sub.state, 'unsubscribed');
      assert.equal(client.state, 'connected');
    });

    it('accepts a subscription with a token option', async (t) => {
      const { client } = await connectedClient(t, gw, enc, { token: connectionToken('dave') });
      const channel = uniqueChannel('private:', 'vault');
      const { sub } = await subscribe(client, channel, { token: subscriptionToken('dave', channel) });

      const publication = waitEvent(sub, 'publication');
      result(await gw.api('publish', { channel, data: { secret: 42 } }));
      assert.deepEqual(enc.decode((await publication).data), { secret: 42 });
    });

    it('accepts a subscription with a token from getToken', async (t) => {
      const { client } = await connectedClient(t, gw, enc, { token: connectionToken('dave') });
      const channel = uniqueChannel('private:', 'vault');
      const requested = [];
      const getToken = async (ctx) => {
        requested.push(ctx.channel);
        return subscriptionToken('dave', ctx.channel);
      };
      const { sub } = await subscribe(client, channel, { getToken });
      assert.deepEqual(requested, [channel]);
      assert.equal(sub.state, 'subscribed');
    });

    it('takes tokens without sub as the anonymous user, as Centrifugo does', async (t) => {
      // What centrifuge-js users generate for guests: no `sub` claim at all.
      const iat = Math.floor(Date.now() / 1000);
      const { client, clientId } = await connectedClient(t, gw, enc, { token: signJwt({ iat }) });
      const lobby = uniqueChannel('', 'guests');
      await subscribe(client, lobby);
      const { presence } = result(await gw.api('presence', { channel: lobby }));
      assert.deepEqual(Object.keys(presence), [clientId]);
      assert.equal(presence[clientId].user ?? '', '');

      const channel = uniqueChannel('private:', 'guests');
      const { sub } = await subscribe(client, channel, { token: signJwt({ iat, channel }) });
      assert.equal(sub.state, 'subscribed');
      const publication = waitEvent(sub, 'publication');
      result(await gw.api('publish', { channel, data: { for: 'guests' } }));
      assert.deepEqual(enc.decode((await publication).data), { for: 'guests' });
    });
  });
}
