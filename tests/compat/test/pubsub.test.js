'use strict';
// Subscribing, publications from the HTTP API, and client-side publish permissions.

const { describe, it, before, after } = require('node:test');
const assert = require('node:assert/strict');
const { startGateway, result } = require('../lib/gateway');
const { ENCODINGS, connectedClient, subscribe, uniqueChannel } = require('../lib/clients');
const { waitEvent } = require('../lib/events');

let gw;
before(async () => {
  gw = await startGateway();
});
after(() => gw?.stop());

for (const enc of ENCODINGS) {
  describe(`pub/sub [${enc.name}]`, () => {
    it('subscribes; a publication from the HTTP API arrives with data and offset', async (t) => {
      const { client } = await connectedClient(t, gw, enc);
      const channel = uniqueChannel('', 'news');
      const { sub, ctx } = await subscribe(client, channel);
      assert.equal(ctx.channel, channel);
      assert.equal(ctx.recoverable, true);
      assert.equal(ctx.wasRecovering, false);
      assert.equal(typeof ctx.streamPosition?.offset, 'number');
      assert.ok(typeof ctx.streamPosition?.epoch === 'string' && ctx.streamPosition.epoch !== '');

      const publication = waitEvent(sub, 'publication');
      const published = result(await gw.api('publish', { channel, data: { text: 'hello', n: 1 } }));
      const pub = await publication;
      assert.equal(pub.channel, channel);
      assert.deepEqual(enc.decode(pub.data), { text: 'hello', n: 1 });
      assert.equal(typeof pub.offset, 'number');
      assert.equal(pub.offset, published.offset);
      assert.ok(pub.offset > ctx.streamPosition.offset);
      assert.equal(published.epoch, ctx.streamPosition.epoch);
    });

    it('client publish in the chat namespace arrives to a second client', async (t) => {
      const channel = uniqueChannel('chat:', 'room');
      const alice = await connectedClient(t, gw, enc);
      const bob = await connectedClient(t, gw, enc);
      const { sub: aliceSub } = await subscribe(alice.client, channel);
      const { sub: bobSub } = await subscribe(bob.client, channel);

      const publication = waitEvent(bobSub, 'publication');
      await aliceSub.publish(enc.encode({ text: 'hi from alice' }));
      const pub = await publication;
      assert.equal(pub.channel, channel);
      assert.deepEqual(enc.decode(pub.data), { text: 'hi from alice' });
      assert.equal(typeof pub.offset, 'number');
      // A client publication carries the publisher's client info.
      assert.equal(pub.info?.client, alice.clientId);
    });

    it('client publish in the default namespace is rejected with 103 permission denied', async (t) => {
      const { client } = await connectedClient(t, gw, enc);
      const channel = uniqueChannel('', 'readonly');
      const { sub } = await subscribe(client, channel);
      const received = [];
      sub.on('publication', (ctx) => received.push(ctx));

      await assert.rejects(sub.publish(enc.encode({ text: 'nope' })), (err) => {
        assert.equal(err.code, 103);
        return true;
      });
      // A rejected publish is not a disconnect, and nothing was published.
      assert.equal(client.state, 'connected');
      const history = result(await gw.api('history', { channel, limit: 10 }));
      assert.deepEqual(history.publications ?? [], []);
      assert.deepEqual(received, []);
    });
  });
}
