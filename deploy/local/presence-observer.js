#!/usr/bin/env node
'use strict';
// A presence observer for the fault runs (deploy/local/faults.sh): one real
// centrifuge-js client, connected straight to one gateway (not through HAProxy, so
// that a fault on another gateway spares it), subscribed with join/leave to
// PREFIX0..PREFIX{K-1}. Per channel it keeps each client's last event (join or leave)
// and counts the leaves announced twice: a leave for a client whose last event was
// already a leave, with no join in between.
//
//   node presence-observer.js WS_URL --channel-prefix P --channels K
//        [--seconds S] [--ready-file F] [--settle S] [--view-file F]
//
// Runs until SIGTERM/SIGINT (or --seconds), waits up to --settle seconds (default 0)
// for every client it saw join to leave, then prints one JSON line:
//   {"joins", "leaves", "leave_duplicates", "disconnects", "resubscribes",
//    "still_in", "unknown_leaves", "duplicates": [first few {channel, client, events}]}
// still_in: clients whose last event is a join (a leave never announced, once the
// load has gone); unknown_leaves: leaves of clients never seen joining.
// --ready-file is written once every subscription is subscribed. --view-file is
// rewritten (whole, by rename) within half a second of every change of what the
// observer believes: {"self": its client id, "channels": {channel: [the client ids
// whose last event is a join]}}, for cluster.py check-presence --observer-view to
// compare with the members presence lists.
// Exit 0; 1 when a leave came twice, when its own connection or a subscription
// dropped (it would have missed events) or it never got subscribed; 2 on bad usage.
// Needs tests/compat/node_modules (cd tests/compat && npm ci).

const fs = require('node:fs');
const path = require('node:path');

const modules = path.join(__dirname, '../../tests/compat/node_modules');
const { Centrifuge } = require(path.join(modules, 'centrifuge'));
const WebSocket = require(path.join(modules, 'ws'));

function usage(message) {
  process.stderr.write(`presence-observer: ${message}\n`);
  process.exit(2);
}

function parseArgs(argv) {
  const opts = { url: null, prefix: null, channels: null, seconds: null, readyFile: null, settle: 0, viewFile: null };
  for (let i = 0; i < argv.length; i += 1) {
    const arg = argv[i];
    const value = () => {
      if (i + 1 >= argv.length) usage(`${arg} needs a value`);
      i += 1;
      return argv[i];
    };
    const number = () => {
      const n = Number(value());
      if (!Number.isFinite(n) || n < 0) usage(`${arg}: not a number >= 0`);
      return n;
    };
    if (arg === '--channel-prefix') opts.prefix = value();
    else if (arg === '--channels') opts.channels = number();
    else if (arg === '--seconds') opts.seconds = number();
    else if (arg === '--ready-file') opts.readyFile = value();
    else if (arg === '--settle') opts.settle = number();
    else if (arg === '--view-file') opts.viewFile = value();
    else if (!arg.startsWith('--') && opts.url === null) opts.url = arg;
    else usage(`unknown argument ${arg}`);
  }
  if (!opts.url || opts.prefix === null || !opts.channels) {
    usage('usage: presence-observer.js WS_URL --channel-prefix P --channels K [--seconds S] [--ready-file F] [--settle S] [--view-file F]');
  }
  return opts;
}

const opts = parseArgs(process.argv.slice(2));
const started = Date.now();
const since = () => ((Date.now() - started) / 1000).toFixed(2);
const log = (message) => process.stderr.write(`presence-observer: +${since()}s ${message}\n`);

const counts = { joins: 0, leaves: 0, leave_duplicates: 0, disconnects: 0, resubscribes: 0, unknown_leaves: 0 };
const duplicates = [];
// channel -> Map(client id -> 'in' | 'out'), the client's last event.
const members = new Map();
// channel + client -> its events so far ("join@1.20s"), quoted for a second leave.
const history = new Map();
const remember = (channel, id, kind) => {
  const key = `${channel} ${id}`;
  const events = history.get(key) ?? [];
  events.push(`${kind}@${since()}s`);
  history.set(key, events);
  return events;
};
let ownClient = null;
// Whether the view changed since --view-file was last written.
let viewChanged = true;
let up = false;
let ready = false;
let stopping = false;

const client = new Centrifuge(opts.url, { websocket: WebSocket });
client.on('connected', (ctx) => {
  ownClient = ctx.client;
  up = true;
  log(`connected as ${ctx.client}`);
});
// 'connecting' after 'connected' is a dropped connection (the SDK reconnects);
// 'disconnected' is a drop it does not come back from.
for (const event of ['connecting', 'disconnected']) {
  client.on(event, (ctx) => {
    if (!up) return;
    up = false;
    if (stopping) return;
    counts.disconnects += 1;
    log(`connection dropped (${event} ${ctx.code} ${ctx.reason})`);
  });
}
client.on('error', (ctx) => log(`error: ${ctx.error?.message ?? JSON.stringify(ctx)}`));

const subscribed = new Set();
for (let i = 0; i < opts.channels; i += 1) {
  const channel = `${opts.prefix}${i}`;
  const state = new Map();
  members.set(channel, state);
  const sub = client.newSubscription(channel, { joinLeave: true });
  let wasSubscribed = false;
  sub.on('subscribed', () => {
    wasSubscribed = true;
    subscribed.add(channel);
    if (!ready && subscribed.size === opts.channels) {
      ready = true;
      log(`subscribed to ${opts.prefix}0..${opts.prefix}${opts.channels - 1}`);
      if (opts.readyFile) fs.writeFileSync(opts.readyFile, `${ownClient}\n`);
    }
  });
  // Subscribing again (after a drop of the subscription or of the connection).
  sub.on('subscribing', (ctx) => {
    if (!wasSubscribed || !subscribed.delete(channel) || stopping) return;
    counts.resubscribes += 1;
    log(`${channel}: subscription dropped (${ctx.code} ${ctx.reason})`);
  });
  sub.on('unsubscribed', (ctx) => {
    if (!subscribed.delete(channel) || stopping) return;
    counts.resubscribes += 1;
    log(`${channel}: unsubscribed (${ctx.code} ${ctx.reason})`);
  });
  sub.on('join', (ctx) => {
    const id = ctx.info.client;
    if (id === ownClient) return;
    counts.joins += 1;
    remember(channel, id, 'join');
    state.set(id, 'in');
    viewChanged = true;
  });
  sub.on('leave', (ctx) => {
    const id = ctx.info.client;
    if (id === ownClient) return;
    counts.leaves += 1;
    const events = remember(channel, id, 'leave');
    const last = state.get(id);
    if (last === 'out') {
      counts.leave_duplicates += 1;
      if (duplicates.length < 5) duplicates.push({ channel, client: id, events });
      log(`${channel}: second leave of ${id} (${events.join(' ')})`);
    } else if (last === undefined) {
      counts.unknown_leaves += 1;
    }
    state.set(id, 'out');
    viewChanged = true;
  });
  sub.subscribe();
}
client.connect();

const writeView = () => {
  if (!opts.viewFile || !viewChanged || !ready) return;
  viewChanged = false;
  const channels = {};
  for (const [channel, state] of members) {
    channels[channel] = [...state].filter(([, v]) => v === 'in').map(([id]) => id);
  }
  const tmp = `${opts.viewFile}.tmp`;
  fs.writeFileSync(tmp, JSON.stringify({ self: ownClient, channels }));
  fs.renameSync(tmp, opts.viewFile);
};
if (opts.viewFile) setInterval(writeView, 500).unref();

const stillIn = () => {
  let n = 0;
  for (const state of members.values()) for (const v of state.values()) if (v === 'in') n += 1;
  return n;
};

async function stop(why) {
  if (stopping) return;
  stopping = true;
  log(`stopping (${why})`);
  // Bounded: leaves of the clients that just went may still be on their way.
  const deadline = Date.now() + opts.settle * 1000;
  while (stillIn() > 0 && Date.now() < deadline && up) {
    await new Promise((resolve) => setTimeout(resolve, 100));
  }
  const report = { ...counts, still_in: stillIn(), duplicates };
  process.stdout.write(`${JSON.stringify(report)}\n`);
  client.disconnect();
  const failed = report.leave_duplicates > 0 || report.disconnects > 0 || report.resubscribes > 0 || !ready;
  if (!ready) log('never subscribed to every channel');
  process.exit(failed ? 1 : 0);
}
process.on('SIGTERM', () => stop('SIGTERM'));
process.on('SIGINT', () => stop('SIGINT'));
if (opts.seconds !== null) setTimeout(() => stop(`${opts.seconds} s`), opts.seconds * 1000);
