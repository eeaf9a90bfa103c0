'use strict';
// The real centrifuge SDK, in both encodings, plus connect/subscribe helpers.

const WebSocket = require('ws');
const { Centrifuge: JsonCentrifuge } = require('centrifuge');
const { Centrifuge: ProtobufCentrifuge } = require('centrifuge/build/protobuf');
const { inspect } = require('node:util');
const { waitEvent, record } = require('./events');

const utf8 = { encoder: new TextEncoder(), decoder: new TextDecoder() };

/**
 * Both wire encodings. Over protobuf, publication payloads are raw bytes: the tests
 * send UTF-8 JSON and parse what arrives, so JSON values compare equal either way.
 */
const ENCODINGS = [
  {
    name: 'json',
    Centrifuge: JsonCentrifuge,
    encode: (value) => value,
    decode: (data) => data,
  },
  {
    name: 'protobuf',
    Centrifuge: ProtobufCentrifuge,
    encode: (value) => utf8.encoder.encode(JSON.stringify(value)),
    decode: (data) => JSON.parse(utf8.decoder.decode(data)),
  },
];

// WebSocket-level errors per client (e.g. "Unexpected server response: 404", "Server sent
// no subprotocol"): the SDK only reports "transport closed", so failures quote these.
const transportErrors = new WeakMap();

/** A client for `gw`, disconnected automatically when test `t` ends. Not connected yet. */
function newClient(t, gw, enc, options = {}) {
  const errors = [];
  class TracingWebSocket extends WebSocket {
    constructor(...args) {
      super(...args);
      this.on('error', (err) => errors.push(err.message));
    }
  }
  const client = new enc.Centrifuge(gw.wsUrl, {
    websocket: TracingWebSocket,
    debug: Boolean(process.env.COMPAT_SDK_DEBUG),
    ...options,
  });
  transportErrors.set(client, errors);
  t.after(() => client.disconnect());
  return client;
}

/**
 * Connects and resolves with the 'connected' context; rejects if it ends 'disconnected'.
 * A failure names the SDK 'error' events seen meanwhile (transport errors, connect errors).
 */
async function connect(client) {
  const errors = record(client, 'error');
  const connected = waitEvent(client, 'connected', { failOn: ['disconnected'] });
  client.connect();
  try {
    return await connected;
  } catch (err) {
    if (errors.items.length) err.message += `; SDK errors meanwhile: ${inspect(errors.items, { depth: 4 })}`;
    const wsErrors = [...new Set(transportErrors.get(client) ?? [])];
    if (wsErrors.length) err.message += `; WebSocket errors: ${wsErrors.join(' | ')}`;
    throw err;
  } finally {
    errors.stop();
  }
}

/** newClient + connect; resolves with { client, clientId }. */
async function connectedClient(t, gw, enc, options) {
  const client = newClient(t, gw, enc, options);
  const ctx = await connect(client);
  return { client, clientId: ctx.client };
}

/** Subscribes and resolves with { sub, ctx } (ctx of 'subscribed'); rejects on 'unsubscribed'. */
async function subscribe(client, channel, options = {}) {
  const sub = client.newSubscription(channel, options);
  const subscribed = waitEvent(sub, 'subscribed', { failOn: ['unsubscribed'] });
  sub.subscribe();
  return { sub, ctx: await subscribed };
}

let counter = 0;
/** A channel name unique to this run, e.g. uniqueChannel('chat:', 'room') -> 'chat:room-1-k3j2'. */
function uniqueChannel(prefix, name) {
  counter += 1;
  return `${prefix}${name}-${counter}-${Math.random().toString(36).slice(2, 8)}`;
}

module.exports = { ENCODINGS, newClient, connect, connectedClient, subscribe, uniqueChannel };
