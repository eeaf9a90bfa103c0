'use strict';
// Pusher webhooks, received by a real HTTP server started here, caused by the real pusher-js:
// occupancy, members, client events and cache misses, signed with the app's secret; a user or
// a channel back within the 3 s delay sends nothing; a failing receiver gets retries, each
// event accepted once. Then three gateways over one NATS: each event once for the cluster,
// whichever gateways saw it, and after a kill -9 of one of them exactly the events its death
// means (its last members removed, its channels vacated).

const { describe, it, before, after } = require('node:test');
const assert = require('node:assert/strict');
const crypto = require('node:crypto');
const fs = require('node:fs');
const http = require('node:http');
const os = require('node:os');
const path = require('node:path');
const { startGateway, CONFIG_PATH } = require('../lib/gateway');
const { startNats } = require('../lib/nats');
const { uniqueChannel } = require('../lib/clients');
const { eventually } = require('../lib/events');
const { connectedPusher, subscribe } = require('../lib/pusher');

const APP = { id: 'hooks-id', key: 'hooks-key', secret: 'hooks-secret' };
// Delayed events wait 3 s; a dead gateway's members expire after --presence-ttl (3 s) and
// its channels go once it leaves the node registry (--node-ttl 3).
const SETTLE_MS = 30_000;
const TEST_TIMEOUT_MS = 90_000;

// Every POST the receiver got: { path, id, key, signature, body, status }.
const received = [];
// Channels whose next N webhooks are answered 500.
const failing = new Map();
const receiver = http.createServer((req, res) => {
  let text = '';
  req.on('data', (chunk) => { text += chunk; });
  req.on('end', () => {
    const body = JSON.parse(text);
    const channel = body.events[0]?.channel;
    const left = failing.get(channel) ?? 0;
    const status = left > 0 ? 500 : 200;
    if (left > 0) failing.set(channel, left - 1);
    received.push({
      path: req.url,
      id: req.headers['x-switchboard-webhook-id'],
      key: req.headers['x-pusher-key'],
      signature: req.headers['x-pusher-signature'],
      text,
      body,
      status,
    });
    res.writeHead(status);
    res.end();
  });
});

let dir;
let config;
before(async () => {
  await new Promise((resolve) => receiver.listen(0, '127.0.0.1', resolve));
  const base = `http://127.0.0.1:${receiver.address().port}`;
  dir = fs.mkdtempSync(path.join(os.tmpdir(), 'switchboard-webhooks-'));
  config = path.join(dir, 'gateway.toml');
  fs.writeFileSync(config, `${fs.readFileSync(CONFIG_PATH, 'utf8')}
[[pusher.apps]]
id = "${APP.id}"
key = "${APP.key}"
secret = "${APP.secret}"
enable_client_events = true

[[pusher.apps.webhooks]]
url = "${base}/all"

[[pusher.apps.webhooks]]
url = "${base}/members"
event_types = ["member_added", "member_removed"]
`);
});
after(() => {
  receiver.close();
  fs.rmSync(dir, { recursive: true, force: true });
});

/** The accepted events of `channel` posted to `where`, as "name" or "name:user", in order. */
function events(channel, where = '/all') {
  return received
    .filter((r) => r.path === where && r.status === 200)
    .flatMap((r) => r.body.events)
    .filter((e) => e.channel === channel)
    .map((e) => (e.user_id && e.name !== 'client_event' ? `${e.name}:${e.user_id}` : e.name));
}

const sorted = (list) => [...list].sort();
const user = (id) => ({ user: { user_id: id, user_info: { name: id } } });
const client = (t, gw, options = {}) => connectedPusher(t, gw, { app: APP, ...options });

/** Waits until `channel`'s events are `expected`, in any order. */
async function settlesTo(channel, expected, where = '/all') {
  await eventually(() => assert.deepEqual(sorted(events(channel, where)), sorted(expected)),
    { timeout: SETTLE_MS, interval: 100 });
}

describe('pusher webhooks, one gateway', () => {
  let gw;
  before(async () => { gw = await startGateway({ config }); });
  after(async () => { await gw?.stop(); });

  it('a channel is occupied with its first subscriber and vacated after its last, signed', async (t) => {
    const channel = uniqueChannel('', 'hooks-occupancy');
    const a = await client(t, gw);
    const b = await client(t, gw);
    await subscribe(a.pusher, channel);
    await subscribe(b.pusher, channel);
    await settlesTo(channel, ['channel_occupied']);
    a.pusher.unsubscribe(channel);
    b.pusher.unsubscribe(channel);
    await settlesTo(channel, ['channel_occupied', 'channel_vacated']);
    for (const r of received.filter((r) => r.body.events.some((e) => e.channel === channel))) {
      assert.equal(r.key, APP.key);
      assert.equal(r.signature, crypto.createHmac('sha256', APP.secret).update(r.text).digest('hex'));
      assert.equal(typeof r.body.time_ms, 'number');
      assert.ok(r.id, 'each webhook names its event for de-duplication');
    }
    assert.deepEqual(events(channel, '/members'), [], 'the member webhook gets no occupancy');
  });

  it('members are added and removed per user, not per connection', async (t) => {
    const channel = uniqueChannel('presence-', 'hooks-members');
    const alice = await client(t, gw, user('alice'));
    const bob1 = await client(t, gw, user('bob'));
    const bob2 = await client(t, gw, user('bob'));
    for (const c of [alice, bob1, bob2]) await subscribe(c.pusher, channel);
    await settlesTo(channel, ['member_added:alice', 'member_added:bob'], '/members');
    bob1.pusher.unsubscribe(channel);
    bob2.pusher.unsubscribe(channel);
    await settlesTo(channel, ['member_added:alice', 'member_added:bob', 'member_removed:bob'], '/members');
    alice.pusher.disconnect();
    await settlesTo(channel, ['channel_occupied', 'member_added:alice', 'member_added:bob',
      'member_removed:bob', 'member_removed:alice', 'channel_vacated']);
  });

  it('a user and a channel back within the delay send neither the leave nor the return', async (t) => {
    const channel = uniqueChannel('presence-', 'hooks-back');
    const alice = await client(t, gw, user('alice'));
    await subscribe(alice.pusher, channel);
    await settlesTo(channel, ['channel_occupied', 'member_added:alice']);
    alice.pusher.unsubscribe(channel);
    await subscribe(alice.pusher, channel);
    // Her final leave's events come 3 s after it, later than the first leave's would have.
    alice.pusher.disconnect();
    await settlesTo(channel, ['channel_occupied', 'member_added:alice', 'member_removed:alice',
      'channel_vacated']);
  });

  it('client events and cache misses reach the webhook', async (t) => {
    const channel = uniqueChannel('presence-', 'hooks-client');
    const cache = uniqueChannel('cache-', 'hooks-miss');
    const alice = await client(t, gw, user('alice'));
    const bob = await client(t, gw, user('bob'));
    const { channel: aliceSub } = await subscribe(alice.pusher, channel);
    await subscribe(bob.pusher, channel);
    aliceSub.trigger('client-typing', { on: true });
    await subscribe(bob.pusher, cache);
    await eventually(() => assert.ok(events(channel).includes('client_event')), { timeout: SETTLE_MS });
    const sent = received.flatMap((r) => r.body.events).find((e) => e.channel === channel && e.name === 'client_event');
    assert.deepEqual(sent, {
      name: 'client_event', channel, event: 'client-typing', data: '{"on":true}',
      socket_id: alice.socketId, user_id: 'alice',
    });
    await settlesTo(cache, ['channel_occupied', 'cache_miss']);
  });

  it('a receiver that fails twice gets the event a third time, and accepts it once', async (t) => {
    const channel = uniqueChannel('', 'hooks-retry');
    failing.set(channel, 2);
    const a = await client(t, gw);
    await subscribe(a.pusher, channel);
    await settlesTo(channel, ['channel_occupied']);
    const tries = received.filter((r) => r.path === '/all' && r.body.events[0].channel === channel);
    assert.deepEqual(tries.map((r) => r.status), [500, 500, 200]);
    assert.equal(new Set(tries.map((r) => r.id)).size, 1, 'every try carries the same id');
  });
});

describe('pusher webhooks, three gateways', () => {
  let nats;
  const gws = [];
  const args = () => ['--nats-url', nats.url, '--presence-ttl', '3', '--node-ttl', '3'];
  before(async () => {
    nats = await startNats();
    for (let i = 0; i < 3; i += 1) gws.push(await startGateway({ config, args: args() }));
  });
  after(async () => {
    await Promise.all(gws.map((gw) => gw.stop()));
    await nats?.stop();
  });

  it('each event goes once for the cluster, whichever gateways saw it', { timeout: TEST_TIMEOUT_MS }, async (t) => {
    const channel = uniqueChannel('presence-', 'hooks-cluster');
    const [a, b, c] = gws;
    const clients = [
      await client(t, a, user('alice')),
      await client(t, b, user('alice')),
      await client(t, b, user('bob')),
      await client(t, c, user('carol')),
    ];
    for (const cl of clients) await subscribe(cl.pusher, channel);
    await settlesTo(channel, ['channel_occupied', 'member_added:alice', 'member_added:bob',
      'member_added:carol']);
    for (const cl of clients) cl.pusher.disconnect();
    await settlesTo(channel, ['channel_occupied', 'member_added:alice', 'member_added:bob',
      'member_added:carol', 'member_removed:alice', 'member_removed:bob', 'member_removed:carol',
      'channel_vacated']);
  });

  it('kill -9 of a gateway: its last members are removed and its channels vacated, once', { timeout: TEST_TIMEOUT_MS }, async (t) => {
    const room = uniqueChannel('presence-', 'hooks-kill');
    const lonely = uniqueChannel('', 'hooks-kill-only-c');
    const [a, b] = gws;
    const c = await startGateway({ config, args: args() });
    t.after(() => c.kill());
    const aliceA = await client(t, a, user('alice'));
    const aliceC = await client(t, c, user('alice'));
    const bobB = await client(t, b, user('bob'));
    const carolC = await client(t, c, user('carol'));
    for (const cl of [aliceA, aliceC, bobB, carolC]) await subscribe(cl.pusher, room);
    await subscribe(carolC.pusher, lonely);
    await settlesTo(room, ['channel_occupied', 'member_added:alice', 'member_added:bob',
      'member_added:carol']);
    await settlesTo(lonely, ['channel_occupied']);

    await c.kill();
    // C's clients cannot come back; they would only retry a dead port.
    aliceC.pusher.disconnect();
    carolC.pusher.disconnect();
    // carol was only on C; alice keeps her connection on A, so she stays.
    await settlesTo(room, ['channel_occupied', 'member_added:alice', 'member_added:bob',
      'member_added:carol', 'member_removed:carol']);
    await settlesTo(lonely, ['channel_occupied', 'channel_vacated']);
    // The rest leave as usual, each event still once.
    aliceA.pusher.disconnect();
    bobB.pusher.disconnect();
    await settlesTo(room, ['channel_occupied', 'member_added:alice', 'member_added:bob',
      'member_added:carol', 'member_removed:carol', 'member_removed:alice', 'member_removed:bob',
      'channel_vacated']);
  });
});
