'use strict';
// The Pusher Channels front end through the real SDKs: pusher-js (client), the `pusher`
// server SDK (HTTP API and the auth signatures, signed in-process by a customHandler, so
// no auth endpoint is needed), and a raw `ws` socket for what no SDK lets us send.

const crypto = require('node:crypto');
const { inspect } = require('node:util');
const WebSocket = require('ws');
const PusherClient = require('pusher-js');
const PusherServer = require('pusher');
const nacl = require('tweetnacl');
const { DEFAULT_TIMEOUT_MS } = require('./events');

if (process.env.COMPAT_SDK_DEBUG) PusherClient.logToConsole = true;

const show = (value) => inspect(value, { depth: 5, breakLength: Infinity });

/** The apps of gateway.toml. */
const APPS = {
  main: { id: 'app-id', key: 'app-key', secret: 'app-secret' },
  other: { id: 'other-id', key: 'other-key', secret: 'other-secret' }, // client events off
  off: { id: 'off-id', key: 'off-key', secret: 'off-secret' }, // enabled = false
};

/**
 * The end-to-end key of private-encrypted- channels: only the server SDK (which encrypts and
 * hands out per-channel shared secrets) and pusher-js (which decrypts) know it; the gateway
 * never sees it.
 */
const ENCRYPTION_MASTER_KEY = Buffer.alloc(32, 7).toString('base64');

/** The `pusher` server SDK for `app`, talking to the HTTP API of `gw` (a gateway or proxy). */
function serverSdk(gw, app = APPS.main, overrides = {}) {
  return new PusherServer({
    appId: app.id,
    key: app.key,
    secret: app.secret,
    host: '127.0.0.1',
    port: String(gw.port),
    useTLS: false,
    timeout: 10_000,
    encryptionMasterKeyBase64: ENCRYPTION_MASTER_KEY,
    ...overrides,
  });
}

/** The server SDK as a signer only (no HTTP): authorizeChannel, authenticateUser. */
function signer(app = APPS.main) {
  return new PusherServer({
    appId: app.id,
    key: app.key,
    secret: app.secret,
    encryptionMasterKeyBase64: ENCRYPTION_MASTER_KEY,
  });
}

/**
 * A pusher-js client of `app` connecting to `target` (anything with a `port`: a gateway or
 * the proxy), disconnected when test `t` ends. It starts connecting at once.
 * - user: { user_id, user_info } for presence channels (channel_data), and
 *   { id, ...} for signin (userData; default { id: user.user_id }).
 * - authorize(socketId, channelName): replaces the SDK's channel signature (e.g. a forged one).
 * - authenticate(socketId): replaces the SDK's user signature.
 * Any other option goes to pusher-js as is.
 */
function newPusher(t, target, { app = APPS.main, user, userData, authorize, authenticate, ...options } = {}) {
  const sdk = signer(app);
  const presenceData = user ? { user_id: user.user_id, user_info: user.user_info } : undefined;
  const channelHandler = ({ socketId, channelName }, callback) => {
    try {
      const auth = authorize
        ? authorize(socketId, channelName)
        : sdk.authorizeChannel(socketId, channelName, channelName.startsWith('presence-') ? presenceData : undefined);
      callback(null, auth);
    } catch (err) {
      callback(err, null);
    }
  };
  const userHandler = ({ socketId }, callback) => {
    try {
      const data = userData ?? (user ? { id: user.user_id, user_info: user.user_info } : undefined);
      callback(null, authenticate ? authenticate(socketId) : sdk.authenticateUser(socketId, data));
    } catch (err) {
      callback(err, null);
    }
  };
  const pusher = new PusherClient(app.key, {
    wsHost: '127.0.0.1',
    wsPort: target.port,
    forceTLS: false,
    enabledTransports: ['ws'],
    disableStats: true,
    cluster: 'x',
    nacl,
    channelAuthorization: { customHandler: channelHandler },
    userAuthentication: { customHandler: userHandler },
    ...options,
  });
  const errors = recordBind(pusher.connection, 'error');
  connectionErrors.set(pusher, errors);
  t.after(() => pusher.disconnect());
  return pusher;
}

const connectionErrors = new WeakMap();

/** The pusher-js connection 'error' events seen so far (e.g. { type: 'PusherError', data: { code } }). */
function errorsOf(pusher) {
  return connectionErrors.get(pusher)?.items ?? [];
}

/**
 * The Pusher error code of a pusher-js connection 'error': { type: 'PusherError', data: { code } }
 * on an established connection, { type: 'WebSocketError', error: <that> } when the handshake
 * or a close carried it; undefined for other errors.
 */
function codeOf(err) {
  if (err?.type === 'PusherError') return err.data?.code;
  if (err?.error?.type === 'PusherError') return err.error.data?.code;
  return undefined;
}

/** The Pusher error codes seen so far on `pusher`'s connection (one close may report twice). */
function errorCodes(pusher) {
  return errorsOf(pusher).map(codeOf).filter((code) => code !== undefined);
}

/** Resolves with the first Pusher error code (passing `filter`) on `pusher`'s connection from now on. */
function nextErrorCode(pusher, { filter = () => true, ...options } = {}) {
  return waitBind(pusher.connection, 'error', {
    filter: (e) => codeOf(e) !== undefined && filter(codeOf(e)),
    what: 'a Pusher error code on the connection',
    ...options,
  }).then(codeOf, (err) => {
    err.message += `; codes seen on the connection: [${errorCodes(pusher).join(', ')}], state '${pusher.connection.state}'`;
    throw err;
  });
}

/**
 * Resolves with the state once `pusher`'s connection is in `state` (a name or a list of names;
 * at once if it already is); rejects at the deadline or when it enters a `failOn` state first.
 */
function waitState(pusher, state, { timeout = DEFAULT_TIMEOUT_MS, failOn = [] } = {}) {
  const { connection } = pusher;
  const wanted = [].concat(state);
  if (wanted.includes(connection.state)) return Promise.resolve(connection.state);
  return new Promise((resolve, reject) => {
    const onChange = ({ previous, current }) => {
      if (wanted.includes(current)) settle(resolve, current);
      else if (failOn.includes(current)) {
        settle(reject, new Error(`connection went ${previous} -> ${current} while waiting for '${state}'; ` +
          `connection errors: ${show(errorsOf(pusher))}`));
      }
    };
    const timer = setTimeout(() => settle(reject, new Error(
      `timed out after ${timeout} ms waiting for state '${state}' (state is '${connection.state}'); ` +
      `connection errors: ${show(errorsOf(pusher))}`)), timeout);
    const settle = (fn, value) => {
      clearTimeout(timer);
      connection.unbind('state_change', onChange);
      fn(value);
    };
    connection.bind('state_change', onChange);
  });
}

/** Waits until `pusher` is connected; resolves with its socket id. */
async function connected(pusher, options = {}) {
  await waitState(pusher, 'connected', { failOn: ['failed', 'unavailable', 'disconnected'], ...options });
  return pusher.connection.socket_id;
}

/** newPusher + connected; resolves with { pusher, socketId }. */
async function connectedPusher(t, target, options) {
  const pusher = newPusher(t, target, options);
  const socketId = await connected(pusher);
  return { pusher, socketId };
}

/**
 * Resolves with the data of the first `event` bound on `target` (a pusher-js channel, the
 * connection, pusher.user…) whose (data, metadata) pass `filter`. Rejects at the deadline or
 * on one of the `failOn` events. Attach it BEFORE triggering the action.
 */
function waitBind(target, event, { timeout = DEFAULT_TIMEOUT_MS, filter = () => true, failOn = [], what } = {}) {
  return new Promise((resolve, reject) => {
    const bound = [];
    const settle = (fn, value) => {
      clearTimeout(timer);
      for (const [name, handler] of bound) target.unbind(name, handler);
      fn(value);
    };
    const bind = (name, handler) => {
      target.bind(name, handler);
      bound.push([name, handler]);
    };
    const label = what ?? (target.name ? `'${event}' on ${target.name}` : `'${event}'`);
    const timer = setTimeout(() => settle(reject, new Error(`timed out after ${timeout} ms waiting for ${label}`)), timeout);
    bind(event, (data, metadata) => {
      let matches;
      try {
        matches = filter(data, metadata);
      } catch (err) {
        settle(reject, err);
        return;
      }
      if (matches) settle(resolve, data);
    });
    for (const name of failOn) {
      bind(name, (data) => settle(reject, new Error(`got '${name}' ${show(data)} while waiting for ${label}`)));
    }
  });
}

/**
 * Records every `event` bound on `target` from now on: `items` (data), `metas` (metadata),
 * `until(n)` waits for at least n.
 */
function recordBind(target, event) {
  const items = [];
  const metas = [];
  let waiters = [];
  const handler = (data, metadata) => {
    items.push(data);
    metas.push(metadata);
    waiters = waiters.filter((w) => !w());
  };
  target.bind(event, handler);
  return {
    items,
    metas,
    stop: () => target.unbind(event, handler),
    until(count, { timeout = DEFAULT_TIMEOUT_MS } = {}) {
      return new Promise((resolve, reject) => {
        const check = () => {
          if (items.length < count) return false;
          clearTimeout(timer);
          resolve(items.slice());
          return true;
        };
        const timer = setTimeout(() => {
          waiters = waiters.filter((w) => w !== check);
          const where = target.name ? ` on ${target.name}` : '';
          reject(new Error(`timed out after ${timeout} ms: got ${items.length}/${count} '${event}'${where}: ` +
            `${show(items.slice(-5))}`));
        }, timeout);
        if (!check()) waiters.push(check);
      });
    },
  };
}

/**
 * Resolves once `channel` (from pusher.subscribe) is subscribed, with the data of its
 * 'pusher:subscription_succeeded' (a Members object on presence channels); rejects on
 * 'pusher:subscription_error' or at the deadline.
 */
function subscribed(channel, options = {}) {
  if (channel.subscribed) return Promise.resolve(channel.name.startsWith('presence-') ? channel.members : undefined);
  return waitBind(channel, 'pusher:subscription_succeeded', {
    failOn: ['pusher:subscription_error'],
    what: `the subscription to ${channel.name}`,
    ...options,
  });
}

/** pusher.subscribe + subscribed; resolves with { channel, data }. */
async function subscribe(pusher, name, options) {
  const channel = pusher.subscribe(name);
  const data = await subscribed(channel, options);
  return { channel, data };
}

/**
 * Subscribes and expects the server to refuse: resolves with the data of
 * 'pusher:subscription_error' (or, if the server answers with a connection-level
 * `pusher:error` instead, with that error); rejects on 'pusher:subscription_succeeded'.
 */
async function subscribeRefused(pusher, name, { timeout = DEFAULT_TIMEOUT_MS } = {}) {
  const channel = pusher.subscribe(name);
  return waitBind(channel, 'pusher:subscription_error', {
    timeout,
    failOn: ['pusher:subscription_succeeded'],
    what: `a subscription_error for ${name}`,
  });
}

/**
 * pusher.signin() (call it on a connected client); resolves with the data of
 * pusher:signin_success once pusher-js has also joined its #server-to-user-<id> channel.
 * Rejects if the connection reports an error or the signin fails first.
 */
async function signIn(pusher, options = {}) {
  const clientErrors = recordBind(pusher.user, 'pusher:signin_error');
  const success = waitBind(pusher.connection, 'message', {
    filter: (m) => m.event === 'pusher:signin_success',
    failOn: ['error'],
    what: 'pusher:signin_success',
    ...options,
  });
  pusher.signin();
  try {
    const message = await success;
    await subscribed(pusher.user.serverToUserChannel, options);
    return message.data;
  } catch (err) {
    if (clientErrors.items.length) err.message += `; client-side signin errors: ${show(clientErrors.items)}`;
    throw err;
  } finally {
    clientErrors.stop();
  }
}

/** The parsed JSON body of an HTTP API reply (a node-fetch Response from the server SDK). */
async function body(responsePromise) {
  const res = await responsePromise;
  const text = await res.text();
  try {
    return JSON.parse(text);
  } catch {
    throw new Error(`HTTP API answered ${res.status} with a body that is not JSON: ${text}`);
  }
}

/**
 * The HTTP status of a server SDK call that is expected to fail (RequestError), or 200.
 * Resolves with { status, body }.
 */
async function statusOf(promise) {
  try {
    const res = await promise;
    return { status: res.status, body: await res.text() };
  } catch (err) {
    if (err?.status === undefined) throw err;
    return { status: err.status, body: err.body };
  }
}

/** HMAC-SHA256 hex digest, for hand-made signatures. */
const hmac = (secret, text) => crypto.createHmac('sha256', secret).update(text).digest('hex');

/**
 * A raw WebSocket to `/app/<key>…` of `target`, closed when test `t` ends. `path` defaults to
 * what pusher-js asks for. Every frame is recorded parsed: { event, channel, data, raw, user_id }
 * where `data` is the inner JSON when the frame's data is a JSON string.
 */
function rawSocket(t, target, path = `/app/${APPS.main.key}?protocol=7&client=js&version=8.6.0&flash=false`) {
  const ws = new WebSocket(`ws://127.0.0.1:${target.port}${path}`);
  const frames = [];
  let waiters = [];
  const transportErrors = [];
  ws.on('error', (err) => transportErrors.push(err.message));
  ws.on('message', (buf) => {
    const text = buf.toString();
    let frame;
    try {
      const outer = JSON.parse(text);
      let data = outer.data;
      if (typeof data === 'string') {
        try {
          data = JSON.parse(data);
        } catch {
          // Not JSON: keep the string.
        }
      }
      frame = { ...outer, data, raw: text };
    } catch {
      frame = { event: undefined, raw: text };
    }
    frames.push(frame);
    waiters = waiters.filter((w) => !w());
  });
  const closed = new Promise((resolve) => ws.once('close', (code, reason) => {
    waiters = waiters.filter((w) => !w());
    resolve({ code, reason: reason.toString() });
  }));
  t.after(() => ws.terminate());

  /** Resolves with the first frame (from the start) passing `filter`; rejects at the deadline or on close. */
  const next = (filter, { timeout = DEFAULT_TIMEOUT_MS, what = 'a frame' } = {}) => new Promise((resolve, reject) => {
    const check = () => {
      const frame = frames.find(filter);
      if (frame) {
        clearTimeout(timer);
        resolve(frame);
        return true;
      }
      if (ws.readyState === WebSocket.CLOSED) {
        clearTimeout(timer);
        reject(new Error(`socket closed while waiting for ${what}; frames: ${show(frames.map((f) => f.raw))}; ` +
          `transport errors: ${transportErrors.join(' | ')}`));
        return true;
      }
      return false;
    };
    const timer = setTimeout(() => {
      waiters = waiters.filter((w) => w !== check);
      reject(new Error(`timed out after ${timeout} ms waiting for ${what}; frames: ${show(frames.map((f) => f.raw))}; ` +
        `transport errors: ${transportErrors.join(' | ')}`));
    }, timeout);
    if (!check()) waiters.push(check);
  });

  const socket = {
    ws,
    frames,
    closed,
    transportErrors,
    next,
    /** Resolves with the first frame of `event` (on `channel` if given). */
    event: (event, channel, options) => next(
      (f) => f.event === event && (channel === undefined || f.channel === channel),
      { what: `'${event}'${channel ? ` on ${channel}` : ''}`, ...options },
    ),
    send(event, data, channel) {
      const frame = { event, data };
      if (channel !== undefined) frame.channel = channel;
      ws.send(JSON.stringify(frame));
    },
    /** Resolves with the socket id of pusher:connection_established. */
    async socketId() {
      const frame = await socket.event('pusher:connection_established');
      return frame.data.socket_id;
    },
    /** Resolves with the close { code, reason }, failing at the deadline. */
    closedWithin(timeout = DEFAULT_TIMEOUT_MS) {
      return Promise.race([
        closed,
        new Promise((_, reject) => setTimeout(() => reject(new Error(
          `socket not closed within ${timeout} ms; frames: ${show(frames.map((f) => f.raw))}`)), timeout).unref()),
      ]);
    },
    /**
     * Subscribes (signing with `app`'s secret if the channel needs it) and resolves with the
     * server's answer frame: subscription_succeeded, or rejects with subscription_error / error.
     */
    async subscribe(channel, { app = APPS.main, channelData } = {}) {
      const socketId = await socket.socketId();
      const data = { channel };
      if (/^(private-|presence-)/.test(channel)) {
        const signed = [socketId, channel];
        if (channelData !== undefined) {
          data.channel_data = JSON.stringify(channelData);
          signed.push(data.channel_data);
        }
        data.auth = `${app.key}:${hmac(app.secret, signed.join(':'))}`;
      }
      const before = frames.length;
      socket.send('pusher:subscribe', data);
      const answer = await next(
        (f) => frames.indexOf(f) >= before && (
          (f.channel === channel && /subscription_(succeeded|error)$/.test(f.event)) || f.event === 'pusher:error'),
        { what: `the answer to subscribing to ${channel}` },
      );
      if (answer.event !== 'pusher_internal:subscription_succeeded') {
        throw new Error(`subscribing to ${channel} was refused: ${answer.raw}`);
      }
      return answer;
    },
  };
  return socket;
}

/**
 * Resolves after every one of `promises` settled, rejecting with the first failure; for
 * waits started together.
 */
async function all(promises) {
  const results = await Promise.allSettled(promises);
  const failed = results.find((r) => r.status === 'rejected');
  if (failed) throw failed.reason;
  return results.map((r) => r.value);
}

/** Presence members of a pusher-js Members object as { id: info }. */
const membersOf = (members) => ({ ...members.members });

const sortedIds = (users) => users.map((u) => u.id).sort();

module.exports = {
  APPS,
  ENCRYPTION_MASTER_KEY,
  PusherClient,
  serverSdk,
  signer,
  newPusher,
  connected,
  connectedPusher,
  waitState,
  waitBind,
  recordBind,
  subscribed,
  subscribe,
  subscribeRefused,
  signIn,
  errorsOf,
  errorCodes,
  codeOf,
  nextErrorCode,
  body,
  statusOf,
  hmac,
  rawSocket,
  all,
  membersOf,
  sortedIds,
};
