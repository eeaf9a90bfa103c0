'use strict';
// History through the client protocol and the HTTP API.

const { describe, it, before, after } = require('node:test');
const assert = require('node:assert/strict');
const { startGateway, result } = require('../lib/gateway');
const { ENCODINGS, connectedClient, subscribe, uniqueChannel } = require('../lib/clients');

let gw;
before(async () => {
  gw = await startGateway();
});
after(() => gw?.stop());

/** Publishes the values one after another through the API; returns their {offset, epoch}. */
async function publishAll(channel, values) {
  const positions = [];
  for (const data of values) positions.push(result(await gw.api('publish', { channel, data })));
  return positions;
}

for (const enc of ENCODINGS) {
  describe(`history [${enc.name}]`, () => {
    it('returns published messages in order, and only newer ones with since', async (t) => {
      const channel = uniqueChannel('', 'history');
      const { client } = await connectedClient(t, gw, enc);
      const { sub } = await subscribe(client, channel);
      const values = [{ n: 1 }, { n: 2 }, { n: 3 }];
      const positions = await publishAll(channel, values);
      const offsets = positions.map((p) => p.offset);
      const { epoch } = positions[0];
      assert.ok(offsets[0] < offsets[1] && offsets[1] < offsets[2], `offsets must increase: ${offsets}`);

      const all = await sub.history({ limit: 10 });
      assert.deepEqual(all.publications.map((p) => enc.decode(p.data)), values);
      assert.deepEqual(all.publications.map((p) => p.offset), offsets);
      assert.equal(all.epoch, epoch);
      assert.equal(all.offset, offsets[2]);

      const newer = await sub.history({ limit: 10, since: { offset: offsets[0], epoch } });
      assert.deepEqual(newer.publications.map((p) => enc.decode(p.data)), values.slice(1));
      assert.deepEqual(newer.publications.map((p) => p.offset), offsets.slice(1));
    });
  });
}

describe('history [http api]', () => {
  it('returns publications in order, with since and reverse', async () => {
    const channel = uniqueChannel('', 'apihistory');
    const values = [{ n: 'a' }, { n: 'b' }, { n: 'c' }];
    const positions = await publishAll(channel, values);
    const offsets = positions.map((p) => p.offset);
    const { epoch } = positions[0];

    const all = result(await gw.api('history', { channel, limit: 10 }));
    assert.deepEqual(all.publications.map((p) => p.data), values);
    assert.deepEqual(all.publications.map((p) => p.offset), offsets);
    assert.equal(all.epoch, epoch);
    assert.equal(all.offset, offsets[2]);

    const newer = result(await gw.api('history', { channel, limit: 10, since: { offset: offsets[1], epoch } }));
    assert.deepEqual(newer.publications.map((p) => p.data), values.slice(2));

    const reversed = result(await gw.api('history', { channel, limit: 10, reverse: true }));
    assert.deepEqual(reversed.publications.map((p) => p.data), [...values].reverse());
  });
});
