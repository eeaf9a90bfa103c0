'use strict';
// centrifuge-js over the HTTP streams (http_stream, sse), wired as its own tests do in
// Node: the global fetch and ReadableStream, and the `eventsource` package.

const http = require('node:http');
const { EventSource } = require('eventsource');
const { ENCODINGS } = require('./clients');

const [JSON_ENC, PROTOBUF_ENC] = ENCODINGS;

/**
 * The transport and encoding pairs the SDK offers: http_stream in both encodings, sse in
 * JSON (EventSource carries text only).
 */
const STREAMS = [
  { transport: 'http_stream', enc: JSON_ENC },
  { transport: 'http_stream', enc: PROTOBUF_ENC },
  { transport: 'sse', enc: JSON_ENC },
];

const base = (target) => `http://127.0.0.1:${target.port}`;

/**
 * A client of `transport` whose stream goes to `gw` (a gateway or a proxy) and whose
 * later commands are POSTed to `emulation` (default: the same place). Disconnected when
 * test `t` ends. Not connected yet.
 */
function newStreamClient(t, gw, { transport, enc }, { emulation = gw, ...options } = {}) {
  const client = new enc.Centrifuge([{ transport, endpoint: `${base(gw)}/connection/${transport}` }], {
    emulationEndpoint: `${base(emulation)}/emulation`,
    fetch,
    readableStream: ReadableStream,
    eventsource: EventSource,
    debug: Boolean(process.env.COMPAT_SDK_DEBUG),
    ...options,
  });
  t.after(() => client.disconnect());
  return client;
}

/** A raw HTTP request to `gw`, headers as given (Origin included, which fetch may not send). */
function rawRequest(gw, { method = 'POST', path, headers = {}, body } = {}) {
  return new Promise((resolve, reject) => {
    // A fresh connection each: a kept-alive one may be closed by the gateway's idle timeout.
    const req = http.request({ host: '127.0.0.1', port: gw.port, method, path, headers, agent: false }, (res) => {
      let text = '';
      res.setEncoding('utf8');
      res.on('data', (chunk) => { text += chunk; });
      res.on('end', () => resolve({ status: res.statusCode, headers: res.headers, text }));
    });
    req.on('error', reject);
    if (body !== undefined) req.write(body);
    req.end();
  });
}

module.exports = { STREAMS, newStreamClient, rawRequest, base };
