'use strict';
// Pusher protocol 7 at /app/{key}: connection_established, ping/pong, refused keys and
// protocol versions, and the SIGTERM drain (close 4200, pusher-js reconnects).

const { describe, it, before, after } = require('node:test');
const assert = require('node:assert/strict');
const { startGateway } = require('../lib/gateway');
const { startProxy } = require('../lib/proxy');
const { uniqueChannel } = require('../lib/clients');
const {
  APPS, serverSdk, newPusher, connected, connectedPusher, waitState, waitBind, recordBind,
  subscribe, nextErrorCode, rawSocket, all,
} = require('../lib/pusher');

const SOCKET_ID_RE = /^\d+\.\d+$/;

let gw;
before(async () => {
  gw = await startGateway();
});
after(() => gw?.stop());


describe('pusher connect', () => {
  it('pusher-js connects to /app/app-key and gets a socket id of the form 123.456', async (t) => {
    const { pusher, socketId } = await connectedPusher(t, gw);
    assert.match(socketId, SOCKET_ID_RE);
    assert.equal(pusher.connection.state, 'connected');
    const second = await connectedPusher(t, gw);
    assert.match(second.socketId, SOCKET_ID_RE);
    assert.notEqual(second.socketId, socketId, 'every connection has its own socket id');
  });

  it('connection_established carries socket_id and activity_timeout as a JSON string; ping gets pong', async (t) => {
    const raw = rawSocket(t, gw);
    const established = await raw.event('pusher:connection_established');
    assert.equal(typeof JSON.parse(established.raw).data, 'string', `data must be a JSON-encoded string: ${established.raw}`);
    assert.match(established.data.socket_id, SOCKET_ID_RE);
    assert.ok(Number.isInteger(established.data.activity_timeout) && established.data.activity_timeout > 0,
      `activity_timeout must be a positive number of seconds: ${established.raw}`);

    raw.send('pusher:ping', {});
    await raw.event('pusher:pong');
    assert.equal(raw.ws.readyState, raw.ws.OPEN);
  });

  it('an unknown key: pusher:error 4001, then close 4001; pusher-js gives up without connecting', async (t) => {
    const raw = rawSocket(t, gw, '/app/no-such-key?protocol=7&client=js&version=8.6.0');
    const error = await raw.event('pusher:error');
    assert.equal(error.data.code, 4001, `pusher:error: ${error.raw}`);
    const close = await raw.closedWithin();
    assert.equal(close.code, 4001);
    assert.equal(raw.frames.filter((f) => f.event === 'pusher:connection_established').length, 0);

    const pusher = newPusher(t, gw, { app: { ...APPS.main, key: 'no-such-key' } });
    const states = recordBind(pusher.connection, 'state_change');
    assert.equal(await nextErrorCode(pusher), 4001);
    // pusher-js stops trying ('disconnected' after a 40xx refusal, or 'failed'/'unavailable').
    await waitState(pusher, ['disconnected', 'failed', 'unavailable'], { timeout: 15_000 });
    assert.ok(!states.items.some((s) => s.current === 'connected'), `never connected: ${JSON.stringify(states.items)}`);
  });

  it('a disabled app (off-key): pusher:error 4003, then close 4003', async (t) => {
    const raw = rawSocket(t, gw, `/app/${APPS.off.key}?protocol=7&client=js&version=8.6.0`);
    const error = await raw.event('pusher:error');
    assert.equal(error.data.code, 4003, `pusher:error: ${error.raw}`);
    assert.equal((await raw.closedWithin()).code, 4003);

    const pusher = newPusher(t, gw, { app: APPS.off });
    const states = recordBind(pusher.connection, 'state_change');
    assert.equal(await nextErrorCode(pusher), 4003);
    assert.ok(!states.items.some((s) => s.current === 'connected'), `never connected: ${JSON.stringify(states.items)}`);
  });

  const protocolCases = [
    ['no protocol query', '/app/app-key', 4008],
    ['protocol=abc', '/app/app-key?protocol=abc', 4006],
    ['protocol=3', '/app/app-key?protocol=3', 4007],
  ];
  for (const [what, path, code] of protocolCases) {
    it(`${what}: closed with ${code}`, async (t) => {
      const raw = rawSocket(t, gw, path);
      const close = await raw.closedWithin();
      assert.equal(close.code, code, `frames: ${raw.frames.map((f) => f.raw).join(' ')}`);
      for (const frame of raw.frames) {
        assert.notEqual(frame.event, 'pusher:connection_established', `must not be established: ${frame.raw}`);
        if (frame.event === 'pusher:error') assert.equal(frame.data.code, code, `pusher:error: ${frame.raw}`);
      }
    });
  }

  it('protocol=7 without the client/version parameters is served', async (t) => {
    const raw = rawSocket(t, gw, '/app/app-key?protocol=7');
    assert.match(await raw.socketId(), SOCKET_ID_RE);
  });

  it('SIGTERM drain closes pusher connections with 4200 and pusher-js reconnects by itself', { timeout: 60_000 }, async (t) => {
    // The drain spreads its closes over --drain-window; 1 s keeps it inside stop()'s 5 s.
    const draining = await startGateway({ args: ['--drain-window', '1'] });
    t.after(() => draining.kill());
    const proxy = await startProxy(draining.port);
    t.after(() => proxy.close());
    const channel = uniqueChannel('', 'drain');
    const { pusher, socketId: before } = await connectedPusher(t, proxy);
    const { channel: sub } = await subscribe(pusher, channel);

    const got4200 = nextErrorCode(pusher, { filter: (code) => code === 4200, timeout: 20_000 });
    const resubscribed = waitBind(sub, 'pusher:subscription_succeeded', { timeout: 20_000, what: `the resubscription to ${channel}` });
    proxy.switchTo(gw.port);
    const stopped = draining.stop();
    await all([got4200, resubscribed]);
    await stopped;
    const after = await connected(pusher);
    assert.notEqual(after, before, 'a new connection, a new socket id');

    const event = waitBind(sub, 'after-drain');
    await serverSdk(gw).trigger(channel, 'after-drain', { ok: true });
    assert.deepEqual(await event, { ok: true });
  });
});
