'use strict';
// A tiny TCP proxy standing for the load balancer in front of the gateways.

const net = require('node:net');

/**
 * Listens on 127.0.0.1:0 and pipes every connection to 127.0.0.1:<target port>.
 * - switchTo(port): new connections go there (current ones stay where they are).
 * - dropAll(): destroys every current connection, both sides.
 * - hold() / release(): while held, new connections are accepted but wait, unforwarded;
 *   release() forwards them to the target current at that moment. This lets a test make
 *   sure something happens while a client is away, without guessing its reconnect delay.
 * Resolves with { port, wsUrl, target(), switchTo, dropAll, hold, release, connections(), close() }.
 */
async function startProxy(targetPort) {
  let target = targetPort;
  let held = null; // while held: the downstream sockets waiting to be forwarded
  const pairs = new Set();

  const forward = (downstream) => {
    if (downstream.destroyed) return;
    const upstream = net.connect({ host: '127.0.0.1', port: target });
    const pair = { downstream, upstream };
    pairs.add(pair);
    const destroy = () => {
      pairs.delete(pair);
      downstream.destroy();
      upstream.destroy();
    };
    // Either side ending or failing (e.g. the gateway was killed, or refused) ends both.
    for (const socket of [downstream, upstream]) {
      socket.on('error', destroy);
      socket.on('close', destroy);
    }
    downstream.pipe(upstream);
    upstream.pipe(downstream);
  };

  const server = net.createServer((downstream) => {
    if (held) {
      downstream.on('error', () => downstream.destroy());
      held.push(downstream);
    } else {
      forward(downstream);
    }
  });

  await new Promise((resolve, reject) => {
    server.once('error', reject);
    server.listen(0, '127.0.0.1', () => {
      server.off('error', reject);
      resolve();
    });
  });
  const { port } = server.address();

  const dropAll = () => {
    for (const { downstream, upstream } of [...pairs]) {
      downstream.destroy();
      upstream.destroy();
    }
    pairs.clear();
  };
  const release = () => {
    const waiting = held ?? [];
    held = null;
    for (const downstream of waiting) forward(downstream);
  };

  return {
    port,
    wsUrl: `ws://127.0.0.1:${port}/connection/websocket`,
    /** Port new connections are forwarded to. */
    target: () => target,
    switchTo(newPort) {
      target = newPort;
    },
    dropAll,
    hold() {
      held ??= [];
    },
    release,
    /** Connections currently forwarded. */
    connections: () => pairs.size,
    async close() {
      for (const downstream of held ?? []) downstream.destroy();
      held = null;
      dropAll();
      await new Promise((resolve) => server.close(() => resolve()));
    },
  };
}

module.exports = { startProxy };
