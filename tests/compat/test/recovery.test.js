'use strict';
// Stream recovery after a reconnect: the SDK resubscribes with recover/offset/epoch.

const { describe, it, before, after } = require('node:test');
const assert = require('node:assert/strict');
const { startGateway, result } = require('../lib/gateway');
const { ENCODINGS, connect, connectedClient, subscribe, uniqueChannel } = require('../lib/clients');
const { waitEvent, record } = require('../lib/events');

let gw;
before(async () => {
  gw = await startGateway();
});
after(() => gw?.stop());

/**
 * Subscribes to `channel`, receives one live publication, disconnects the client, publishes
 * `missed` messages through the API while it is away, then reconnects. Returns the
 * 'subscribed' context of the resubscribe, the API results of the missed publications, and
 * a recorder of the publications received since the reconnect.
 */
async function missWhileAway(t, enc, channel, missed) {
  const { client } = await connectedClient(t, gw, enc);
  const { sub, ctx: first } = await subscribe(client, channel);
  assert.equal(first.recoverable, true);

  const live = waitEvent(sub, 'publication');
  const livePos = result(await gw.api('publish', { channel, data: { n: 0 } }));
  assert.equal((await live).offset, livePos.offset);

  const gone = waitEvent(client, 'disconnected');
  client.disconnect();
  await gone;

  const positions = [];
  for (let n = 1; n <= missed; n++) {
    positions.push(result(await gw.api('publish', { channel, data: { n } })));
  }

  const received = record(sub, 'publication');
  const resubscribed = waitEvent(sub, 'subscribed', { failOn: ['unsubscribed'] });
  await connect(client);
  return { sub, ctx: await resubscribed, positions, received };
}

for (const enc of ENCODINGS) {
  describe(`recovery [${enc.name}]`, () => {
    it('recovers missed publications in order, none lost or duplicated (recovered: true)', async (t) => {
      const channel = uniqueChannel('', 'recover');
      const missed = 5;
      const { ctx, positions, received } = await missWhileAway(t, enc, channel, missed);
      assert.equal(ctx.wasRecovering, true);
      assert.equal(ctx.recovered, true);
      assert.equal(ctx.recoverable, true);

      // A live publication after the recovered ones marks the end of the stream: if anything
      // were duplicated it would show up before it.
      const sentinel = result(await gw.api('publish', { channel, data: { n: 'live' } }));
      const pubs = await received.until(missed + 1);
      assert.deepEqual(pubs.map((p) => enc.decode(p.data)),
        [...positions.map((_, i) => ({ n: i + 1 })), { n: 'live' }]);
      assert.deepEqual(pubs.map((p) => p.offset), [...positions.map((p) => p.offset), sentinel.offset]);
      for (let i = 1; i < pubs.length; i++) assert.ok(pubs[i].offset > pubs[i - 1].offset);
      assert.equal(ctx.streamPosition.epoch, positions[0].epoch);
    });

    it('reports recovered: false when history no longer covers the gap', async (t) => {
      const channel = uniqueChannel('short:', 'recover');
      const { ctx } = await missWhileAway(t, enc, channel, 10);
      assert.equal(ctx.wasRecovering, true);
      assert.equal(ctx.recovered, false);
    });
  });
}
