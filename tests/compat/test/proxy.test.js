'use strict';
// Centrifugo's proxies: a real HTTP server started here plays the application
// backend, and the real centrifuge-js connects, subscribes, publishes, calls rpc
// and sends through a gateway that asks it. Each test sets how the backend answers
// and reads what it was asked.

const { describe, it, before, after, beforeEach } = require('node:test');
const assert = require('node:assert/strict');
const fs = require('node:fs');
const http = require('node:http');
const os = require('node:os');
const path = require('node:path');
const WebSocket = require('ws');
const { startGateway, result, CONFIG_PATH } = require('../lib/gateway');
const { ENCODINGS, newClient, connect, connectedClient, subscribe, uniqueChannel } = require('../lib/clients');
const { waitEvent, record, eventually } = require('../lib/events');
const { connectionToken } = require('../lib/tokens');

// What the backend answers per proxy ({status, body} or a function of the request
// body), and every request it got.
let answers = {};
const asked = [];
const backend = http.createServer((req, res) => {
  let body = '';
  req.on('data', (chunk) => { body += chunk; });
  req.on('end', () => {
    const kind = req.url.slice(1);
    const request = { kind, headers: req.headers, body: JSON.parse(body) };
    asked.push(request);
    let answer = answers[kind] ?? { status: 404, body: {} };
    if (typeof answer === 'function') answer = answer(request.body);
    if (answer.hold) return; // never answered: the gateway's timeout decides
    res.writeHead(answer.status ?? 200, { 'Content-Type': 'application/json' });
    res.end(JSON.stringify(answer.body));
  });
});

let gw;
let dir;
before(async () => {
  await new Promise((resolve) => backend.listen(0, '127.0.0.1', resolve));
  const base = `http://127.0.0.1:${backend.address().port}`;
  dir = fs.mkdtempSync(path.join(os.tmpdir(), 'switchboard-proxy-'));
  const config = path.join(dir, 'gateway.toml');
  fs.writeFileSync(config, `${fs.readFileSync(CONFIG_PATH, 'utf8')}
[proxy]
connect_endpoint = "${base}/connect"
refresh_endpoint = "${base}/refresh"
rpc_endpoint = "${base}/rpc"
send_endpoint = "${base}/send"
subscribe_endpoint = "${base}/subscribe"
sub_refresh_endpoint = "${base}/sub_refresh"
timeout = 0.5
http_headers = ["cookie", "x-app-version"]

[[namespaces]]
name = "proxied"
presence = true
proxy_subscribe = true
proxy_publish = true
proxy_sub_refresh = true
publish_proxy_endpoint = "${base}/publish"
allow_presence_for_subscriber = true
history_size = 10
history_ttl = 300
`);
  gw = await startGateway({ config });
});
after(async () => {
  await gw?.stop();
  backend.close();
  fs.rmSync(dir, { recursive: true, force: true });
});
beforeEach(() => {
  answers = {};
  asked.length = 0;
});

const lastAsked = (kind) => asked.filter((a) => a.kind === kind).at(-1);

/** A WebSocket class sending these headers with the upgrade, as a browser sends cookies. */
function withHeaders(headers) {
  return class extends WebSocket {
    constructor(url, protocols) {
      super(url, protocols, { headers });
    }
  };
}

describe('connect proxy', () => {
  it('authenticates a client without a token: user, info, data and server-side channels', async (t) => {
    const channel = uniqueChannel('chat:', 'proxied-server-side');
    answers.connect = {
      body: { result: { user: '42', info: { name: 'Ann' }, data: { welcome: true }, channels: [channel] } },
    };
    const client = newClient(t, gw, ENCODINGS[0], {
      websocket: withHeaders({ Cookie: 'session=abc', 'X-App-Version': '7', 'X-Other': 'not passed' }),
      data: { from: 'client' },
      name: 'test-app',
    });
    const subscribed = waitEvent(client, 'subscribed', { filter: (c) => c.channel === channel });
    const ctx = await connect(client);
    assert.deepEqual(ctx.data, { welcome: true });
    await subscribed;

    const request = lastAsked('connect');
    assert.equal(request.body.client, ctx.client);
    assert.equal(request.body.transport, 'websocket');
    assert.equal(request.body.protocol, 'json');
    assert.equal(request.body.encoding, 'json');
    assert.equal(request.body.name, 'test-app');
    assert.deepEqual(request.body.data, { from: 'client' });
    assert.equal(request.headers.cookie, 'session=abc');
    assert.equal(request.headers['x-app-version'], '7');
    assert.equal(request.headers['x-other'], undefined, 'only the allowed headers go to the backend');

    const { presence } = result(await gw.api('presence', { channel }));
    assert.equal(presence[ctx.client].user, '42');
    assert.deepEqual(presence[ctx.client].conn_info, { name: 'Ann' });
  });

  it('a client with a token is not asked about', async (t) => {
    answers.connect = { body: { error: { code: 1000, message: 'should not be asked' } } };
    await connectedClient(t, gw, ENCODINGS[0], { token: connectionToken('tok') });
    assert.equal(lastAsked('connect'), undefined);
  });

  it('the backend\'s disconnect closes the connection with its code and reason', async (t) => {
    answers.connect = { body: { disconnect: { code: 4501, reason: 'banned' } } };
    const client = newClient(t, gw, ENCODINGS[0]);
    const disconnected = waitEvent(client, 'disconnected', { failOn: ['connected'] });
    client.connect();
    const ctx = await disconnected;
    assert.deepEqual({ code: ctx.code, reason: ctx.reason }, { code: 4501, reason: 'banned' });
  });

  for (const [name, answer] of [
    ['answers 500', { status: 500, body: {} }],
    ['answers what is not its JSON', { body: { result: 'nope' } }],
    ['does not answer in time', { hold: true }],
  ]) {
    it(`a backend that ${name} gets the client the temporary error 100, and it retries`, async (t) => {
      answers.connect = answer;
      const client = newClient(t, gw, ENCODINGS[0]);
      const errors = record(client, 'error');
      client.connect();
      await eventually(() => {
        assert.ok(asked.filter((a) => a.kind === 'connect').length >= 2, 'the client tried again');
      });
      errors.stop();
      const connectErrors = errors.items.filter((e) => e.type === 'connect');
      assert.ok(connectErrors.length >= 1, JSON.stringify(errors.items));
      assert.equal(connectErrors[0].error.code, 100);
      assert.notEqual(client.state, 'connected');
      // Once the backend works, the retrying client gets in.
      answers.connect = { body: { result: { user: 'back' } } };
      await waitEvent(client, 'connected', { timeout: 15_000 });
    });
  }
});

describe('refresh proxy', () => {
  const inSeconds = (s) => Math.floor(Date.now() / 1000) + s;

  it('at the expiry the connect proxy gave, the backend extends the connection, then ends it', async (t) => {
    answers.connect = { body: { result: { user: 'refreshed', expire_at: inSeconds(1) } } };
    answers.refresh = { body: { result: { expire_at: inSeconds(1) } } };
    const client = newClient(t, gw, ENCODINGS[0]);
    const ctx = await connect(client);
    const connecting = record(client, 'connecting');
    // Two refreshes asked and answered: the connection outlived its first expiry.
    await eventually(() => assert.ok(asked.filter((a) => a.kind === 'refresh').length >= 2), { timeout: 15_000 });
    const request = lastAsked('refresh');
    assert.equal(request.body.client, ctx.client);
    assert.equal(request.body.user, 'refreshed');
    assert.equal(connecting.items.length, 0, 'never reconnected');
    assert.equal(client.state, 'connected');

    // The backend says no: closed as expired (3005), and the client connects again
    // through the connect proxy.
    answers.refresh = { body: { result: { expired: true } } };
    answers.connect = { body: { result: { user: 'refreshed' } } };
    const reconnecting = waitEvent(client, 'connecting', { timeout: 15_000 });
    assert.equal((await reconnecting).code, 3005);
    await waitEvent(client, 'connected');
    connecting.stop();
  });
});

describe('sub_refresh proxy', () => {
  const inSeconds = (s) => Math.floor(Date.now() / 1000) + s;

  it('at the expiry the subscribe proxy gave, the backend extends the subscription, then ends it', async (t) => {
    const channel = uniqueChannel('proxied:', 'sub-refreshed');
    answers.subscribe = { body: { result: { expire_at: inSeconds(1), info: { v: 1 } } } };
    answers.sub_refresh = { body: { result: { expire_at: inSeconds(1) } } };
    const { client, clientId } = await connectedClient(t, gw, ENCODINGS[0], { token: connectionToken('sub-refresh-user') });
    const connecting = record(client, 'connecting');
    const { sub, ctx } = await subscribe(client, channel);
    assert.ok(!ctx.expires, 'the client is not asked to refresh: the server does');
    // Two refreshes asked and answered: the subscription outlived its first expiry.
    await eventually(() => assert.ok(asked.filter((a) => a.kind === 'sub_refresh').length >= 2), { timeout: 15_000 });
    const request = lastAsked('sub_refresh').body;
    assert.equal(request.channel, channel);
    assert.equal(request.user, 'sub-refresh-user');
    assert.equal(request.client, clientId);
    assert.equal(sub.state, 'subscribed');
    assert.equal(connecting.items.length, 0, 'never reconnected');

    // The backend says no: the connection is closed with 3006 (subscription expired).
    answers.sub_refresh = { body: { result: { expired: true } } };
    answers.subscribe = { body: { result: {} } };
    const reconnecting = waitEvent(client, 'connecting', { timeout: 15_000 });
    assert.equal((await reconnecting).code, 3006);
    connecting.stop();
  });
});

for (const enc of ENCODINGS) {
  describe(`rpc, send and publish proxies [${enc.name}]`, () => {
    it('rpc reaches the backend with its method and data; the answer comes back', async (t) => {
      answers.rpc = (body) => ({ body: { result: { data: { echo: body.method, n: 2 } } } });
      const { client } = await connectedClient(t, gw, enc, { token: connectionToken('rpc-user') });
      const reply = await client.rpc('getUser', enc.encode({ id: 1 }));
      assert.deepEqual(enc.decode(reply.data), { echo: 'getUser', n: 2 });
      const request = lastAsked('rpc').body;
      assert.equal(request.user, 'rpc-user');
      assert.equal(request.method, 'getUser');
      assert.equal(request.protocol, enc.name);
      if (enc.name === 'json') assert.deepEqual(request.data, { id: 1 });
      else assert.deepEqual(JSON.parse(Buffer.from(request.b64data, 'base64')), { id: 1 });
    });

    it('rpc gets the backend\'s error', async (t) => {
      answers.rpc = { body: { error: { code: 1000, message: 'no such user' } } };
      const { client } = await connectedClient(t, gw, enc, { token: connectionToken('rpc-user') });
      await assert.rejects(client.rpc('getUser', enc.encode({})),
        (e) => e.code === 1000 && e.message === 'no such user');
      assert.equal(client.state, 'connected');
    });

    it('send goes to the backend, and the connection stays', async (t) => {
      answers.send = { body: {} };
      const { client } = await connectedClient(t, gw, enc, { token: connectionToken('sender') });
      await client.send(enc.encode({ typing: true }));
      await eventually(() => assert.ok(lastAsked('send')));
      const request = lastAsked('send').body;
      assert.equal(request.user, 'sender');
      const data = enc.name === 'json' ? request.data : JSON.parse(Buffer.from(request.b64data, 'base64'));
      assert.deepEqual(data, { typing: true });
      assert.equal(client.state, 'connected');
    });

    it('the publish proxy may rewrite a publication, or refuse it', async (t) => {
      answers.subscribe = { body: { result: {} } };
      answers.publish = (body) => {
        const data = body.data ?? JSON.parse(Buffer.from(body.b64data, 'base64'));
        if (data.text === 'forbidden') return { body: { error: { code: 1001, message: 'moderated' } } };
        const out = { text: data.text.toUpperCase() };
        return { body: { result: enc.name === 'json' ? { data: out } : { b64data: Buffer.from(JSON.stringify(out)).toString('base64') } } };
      };
      const { client } = await connectedClient(t, gw, enc, { token: connectionToken('writer') });
      const channel = uniqueChannel('proxied:', 'publish');
      const { sub } = await subscribe(client, channel);
      const published = waitEvent(sub, 'publication');
      await sub.publish(enc.encode({ text: 'hello' }));
      assert.deepEqual(enc.decode((await published).data), { text: 'HELLO' });
      await assert.rejects(sub.publish(enc.encode({ text: 'forbidden' })), (e) => e.code === 1001);
      const history = result(await gw.api('history', { channel, limit: 10 }));
      assert.equal(history.publications.length, 1);
    });
  });
}

describe('subscribe proxy', () => {
  it('lets a client in with the backend\'s channel info and data', async (t) => {
    answers.subscribe = { body: { result: { info: { role: 'editor' }, data: { motd: 'hi' } } } };
    const { client, clientId } = await connectedClient(t, gw, ENCODINGS[0], { token: connectionToken('sub-user') });
    const channel = uniqueChannel('proxied:', 'room');
    const { ctx } = await subscribe(client, channel, { data: { want: 'in' } });
    assert.deepEqual(ctx.data, { motd: 'hi' });
    const request = lastAsked('subscribe').body;
    assert.equal(request.channel, channel);
    assert.equal(request.user, 'sub-user');
    assert.deepEqual(request.data, { want: 'in' });
    const { presence } = result(await gw.api('presence', { channel }));
    assert.deepEqual(presence[clientId].chan_info, { role: 'editor' });
  });

  it('refuses with the backend\'s error; other namespaces are not asked about', async (t) => {
    answers.subscribe = { body: { error: { code: 1003, message: 'not a member' } } };
    const { client } = await connectedClient(t, gw, ENCODINGS[0], { token: connectionToken('outsider') });
    const sub = client.newSubscription(uniqueChannel('proxied:', 'closed'));
    const unsubscribed = waitEvent(sub, 'unsubscribed', { failOn: ['subscribed'] });
    sub.subscribe();
    assert.equal((await unsubscribed).code, 1003);
    const before = asked.length;
    await subscribe(client, uniqueChannel('chat:', 'not-proxied'));
    assert.equal(asked.length, before);
  });
});
