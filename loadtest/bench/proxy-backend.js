'use strict';
// The application backend of the proxy benchmarks (loadtest/bench/run.sh): answers
// Centrifugo's connect proxy with a user named after the client, and its publish proxy
// by letting the publication through, at once. Prints "proxy backend on PORT" once it
// listens; stops on SIGTERM. Node's own http server: no dependencies.

const http = require('node:http');

const connect = (body) => ({ result: { user: `u-${body.client.slice(0, 8)}` } });
const publish = () => ({ result: {} });
const answers = { '/connect': connect, '/publish': publish };

const server = http.createServer((req, res) => {
  const answer = answers[req.url];
  const chunks = [];
  req.on('data', (c) => chunks.push(c));
  req.on('end', () => {
    if (!answer) {
      res.writeHead(404).end();
      return;
    }
    let body;
    try {
      body = JSON.parse(Buffer.concat(chunks));
    } catch {
      res.writeHead(400).end();
      return;
    }
    const out = JSON.stringify(answer(body));
    res.writeHead(200, { 'Content-Type': 'application/json', 'Content-Length': Buffer.byteLength(out) });
    res.end(out);
  });
});
server.keepAliveTimeout = 60_000;
server.listen(0, '127.0.0.1', () => {
  process.stdout.write(`proxy backend on ${server.address().port}\n`);
});
process.on('SIGTERM', () => server.close(() => process.exit(0)));
