'use strict';
// The server API over gRPC, called by a client that @grpc/proto-loader builds from
// proto/api.proto (Centrifugo's package, service, messages and field numbers) and
// @grpc/grpc-js sends: a third-party toolchain, not our own code. What each call
// does is seen by the real centrifuge-js (and through the HTTP API).

const { describe, it, before, after } = require('node:test');
const assert = require('node:assert/strict');
const path = require('node:path');
const grpc = require('@grpc/grpc-js');
const protoLoader = require('@grpc/proto-loader');
const { startGateway, result, API_KEY } = require('../lib/gateway');
const { ENCODINGS, connectedClient, subscribe, uniqueChannel } = require('../lib/clients');
const { waitEvent, eventually } = require('../lib/events');
const { connectionToken } = require('../lib/tokens');

const PROTO = path.resolve(__dirname, '../../../proto/api.proto');
// Field names as in the .proto, 64-bit integers as strings (no precision lost),
// bytes as Buffers, unset fields present with their defaults.
const definition = protoLoader.loadSync(PROTO, {
  keepCase: true, longs: String, bytes: Buffer, defaults: true, oneofs: false,
});
const { CentrifugoApi } = grpc.loadPackageDefinition(definition).centrifugal.centrifugo.api;

const [json] = ENCODINGS;
const utf8 = (b) => Buffer.from(b).toString('utf8');

let gw;
let api;
before(async () => {
  gw = await startGateway({ args: ['--grpc-api-listen', '127.0.0.1:0'] });
  assert.ok(gw.grpcAddress, 'the gateway printed its gRPC address');
  api = new CentrifugoApi(gw.grpcAddress, grpc.credentials.createInsecure());
});
after(async () => {
  api?.close();
  await gw?.stop();
});

/** Calls `method` with the API key (or `key`); resolves with the response message. */
function call(method, request, { key = API_KEY, client = api } = {}) {
  const metadata = new grpc.Metadata();
  if (key !== null) metadata.set('authorization', `apikey ${key}`);
  return new Promise((resolve, reject) => {
    client[method](request, metadata, { deadline: Date.now() + 10_000 }, (err, reply) => {
      if (err) reject(err);
      else resolve(reply);
    });
  });
}

/** The response's result, failing on its error. */
async function ok(method, request) {
  const reply = await call(method, request);
  assert.equal(reply.error, null, `${method}: ${JSON.stringify(reply.error)}`);
  return reply.result;
}

let users = 0;
const uniqueUser = (name) => `${name}-${++users}-${process.pid}`;

describe('gRPC API: authorization and refusals', () => {
  it('refuses a call without the key, or with another key, as UNAUTHENTICATED', async () => {
    for (const key of [null, 'wrong-key', `${API_KEY}x`]) {
      await assert.rejects(call('Info', {}, { key }), (err) => err.code === grpc.status.UNAUTHENTICATED);
    }
  });

  it('answers UNIMPLEMENTED for a method of Centrifugo\'s service this gateway does not serve', async () => {
    const client = new grpc.Client(gw.grpcAddress, grpc.credentials.createInsecure());
    const metadata = new grpc.Metadata();
    metadata.set('authorization', `apikey ${API_KEY}`);
    const err = await new Promise((resolve) => {
      client.makeUnaryRequest('/centrifugal.centrifugo.api.CentrifugoApi/HistoryRemove',
        (x) => x, (x) => x, Buffer.alloc(0), metadata, (e) => resolve(e));
    });
    client.close();
    assert.equal(err?.code, grpc.status.UNIMPLEMENTED);
  });

  it('answers a request that is not a valid call with the error 107 in the response', async () => {
    const channel = uniqueChannel('chat:', 'grpc-bad');
    const both = await call('Publish', { channel, data: Buffer.from('{}'), b64data: 'e30=' });
    assert.equal(both.error.code, 107);
    assert.match(both.error.message, /not both/);
    const session = await call('Subscribe', { channel, user: 'u', session: 'abc' });
    assert.equal(session.error.code, 107);
    assert.match(session.error.message, /session/);
    const info = await call('Subscribe', { channel, user: 'u', info: Buffer.from('not json') });
    assert.equal(info.error.code, 107);
  });

  it('answers a channel error as over HTTP (unknown namespace: 102)', async () => {
    const reply = await call('Publish', { channel: 'nowhere:x', data: Buffer.from('{}') });
    assert.equal(reply.error.code, 102);
    assert.equal(reply.result, null);
  });
});

describe('gRPC API: publications', () => {
  it('Publish reaches a centrifuge-js subscriber, and History gives the exact bytes back', async (t) => {
    const { client } = await connectedClient(t, gw, json);
    const channel = uniqueChannel('chat:', 'grpc-pub');
    const { sub } = await subscribe(client, channel);
    const published = waitEvent(sub, 'publication');
    // Whitespace kept: the bytes go through as they are.
    const data = Buffer.from('{"text": "over gRPC",  "n": 1}');
    const res = await ok('Publish', { channel, data, tags: { kind: 'test' }, idempotency_key: 'k1' });
    assert.equal(res.offset, '1');
    assert.ok(res.epoch.length > 0);
    const ctx = await published;
    assert.deepEqual(ctx.data, { text: 'over gRPC', n: 1 });
    assert.deepEqual(ctx.tags, { kind: 'test' });

    // The same idempotency key: the same publication, not a second one.
    const again = await ok('Publish', { channel, data, idempotency_key: 'k1' });
    assert.equal(again.offset, '1');

    const history = await ok('History', { channel, limit: 10 });
    assert.equal(history.publications.length, 1);
    assert.equal(utf8(history.publications[0].data), utf8(data));
    assert.deepEqual(history.publications[0].tags, { kind: 'test' });
    assert.equal(history.offset, '1');
    assert.equal(history.epoch, res.epoch);
    const since = await ok('History', { channel, limit: 10, since: { offset: '1', epoch: res.epoch } });
    assert.equal(since.publications.length, 0);
  });

  it('Publish with b64data carries the decoded bytes', async (t) => {
    const { client } = await connectedClient(t, gw, json);
    const channel = uniqueChannel('chat:', 'grpc-b64');
    const { sub } = await subscribe(client, channel);
    const published = waitEvent(sub, 'publication');
    await ok('Publish', { channel, b64data: Buffer.from('{"b64":true}').toString('base64') });
    assert.deepEqual((await published).data, { b64: true });
  });

  it('Broadcast answers per channel, in order, an error where one fails', async (t) => {
    const { client } = await connectedClient(t, gw, json);
    const a = uniqueChannel('chat:', 'grpc-bc-a');
    const b = uniqueChannel('chat:', 'grpc-bc-b');
    const subA = (await subscribe(client, a)).sub;
    const subB = (await subscribe(client, b)).sub;
    const gotA = waitEvent(subA, 'publication');
    const gotB = waitEvent(subB, 'publication');
    const res = await ok('Broadcast', { channels: [a, 'nowhere:x', b], data: Buffer.from('{"all":1}') });
    assert.equal(res.responses.length, 3);
    assert.equal(res.responses[0].error, null);
    assert.equal(res.responses[0].result.offset, '1');
    assert.equal(res.responses[1].error.code, 102);
    assert.equal(res.responses[2].error, null);
    assert.deepEqual((await gotA).data, { all: 1 });
    assert.deepEqual((await gotB).data, { all: 1 });
  });
});

describe('gRPC API: presence and the cluster methods', () => {
  it('Presence and PresenceStats count a connected centrifuge-js client, with its info', async (t) => {
    const user = uniqueUser('gina');
    const { client, clientId } = await connectedClient(t, gw, json, {
      token: connectionToken(user, { info: { name: 'Gina' } }),
    });
    const channel = uniqueChannel('chat:', 'grpc-presence');
    await subscribe(client, channel);
    const stats = await ok('PresenceStats', { channel });
    assert.deepEqual(stats, { num_clients: 1, num_users: 1 });
    const presence = await ok('Presence', { channel });
    assert.deepEqual(Object.keys(presence.presence), [clientId]);
    const member = presence.presence[clientId];
    assert.equal(member.user, user);
    assert.equal(member.client, clientId);
    assert.deepEqual(JSON.parse(utf8(member.conn_info)), { name: 'Gina' });
  });

  it('Subscribe puts a connected client into a channel; Unsubscribe takes it out', async (t) => {
    const user = uniqueUser('hal');
    const { client } = await connectedClient(t, gw, json, { token: connectionToken(user) });
    const channel = uniqueChannel('chat:', 'grpc-server-sub');
    const subscribed = waitEvent(client, 'subscribed', { filter: (ctx) => ctx.channel === channel });
    await ok('Subscribe', { channel, user, data: Buffer.from('{"welcome":true}') });
    const ctx = await subscribed;
    assert.deepEqual(ctx.data, { welcome: true });
    const unsubscribed = waitEvent(client, 'unsubscribed', { filter: (c) => c.channel === channel });
    await ok('Unsubscribe', { channel, user });
    await unsubscribed;
    assert.equal(client.state, 'connected');
  });

  it('Disconnect closes a user\'s connection with the code and reason given', async (t) => {
    const user = uniqueUser('ida');
    const { client } = await connectedClient(t, gw, json, { token: connectionToken(user) });
    const disconnected = waitEvent(client, 'disconnected', { failOn: ['connecting'] });
    await ok('Disconnect', { user, disconnect: { code: 4502, reason: 'bye over gRPC' } });
    const ctx = await disconnected;
    assert.deepEqual({ code: ctx.code, reason: ctx.reason }, { code: 4502, reason: 'bye over gRPC' });
  });

  it('Refresh with expired: true sends the user\'s connection back to connect again (3005)', async (t) => {
    const user = uniqueUser('jo');
    const { client } = await connectedClient(t, gw, json, { token: connectionToken(user) });
    const connecting = waitEvent(client, 'connecting');
    await ok('Refresh', { user, expired: true });
    assert.equal((await connecting).code, 3005);
    await waitEvent(client, 'connected', { failOn: ['disconnected'] });
  });

  it('Info and Channels agree with the HTTP API', async (t) => {
    const { client } = await connectedClient(t, gw, json);
    const channel = uniqueChannel('chat:', 'grpc-channels');
    await subscribe(client, channel);
    const info = await ok('Info', {});
    assert.equal(info.nodes.length, 1);
    const http = result(await gw.api('info', {})).nodes[0];
    assert.equal(info.nodes[0].uid, http.uid);
    assert.equal(info.nodes[0].name, http.name);
    assert.equal(info.nodes[0].version, http.version);
    assert.ok(info.nodes[0].num_clients >= 1);
    const channels = await ok('Channels', { pattern: channel });
    assert.deepEqual(channels.channels, { [channel]: { num_clients: 1 } });
  });
});

describe('gRPC API: Batch', () => {
  for (const parallel of [false, true]) {
    it(`runs every command and replies in their order (parallel: ${parallel})`, async (t) => {
      const { client } = await connectedClient(t, gw, json);
      const channel = uniqueChannel('chat:', `grpc-batch-${parallel}`);
      await subscribe(client, channel);
      const commands = [
        { publish: { channel, data: Buffer.from('{"i":1}') } },
        { presence_stats: { channel } },
        {}, // no method set: 104
        { publish: { channel: 'nowhere:x', data: Buffer.from('{}') } },
        { info: {} },
      ];
      const reply = await call('Batch', { commands, parallel });
      assert.equal(reply.replies.length, 5);
      const [pub, stats, none, failed, info] = reply.replies;
      assert.equal(pub.error, null);
      assert.equal(pub.publish.offset, '1');
      assert.deepEqual(stats.presence_stats, { num_clients: 1, num_users: 1 });
      assert.equal(none.error.code, 104);
      assert.equal(failed.error.code, 102);
      assert.equal(info.info.nodes.length, 1);
      await eventually(async () => {
        const history = await ok('History', { channel, limit: 10 });
        assert.equal(history.publications.length, 1);
      });
    });
  }
});
