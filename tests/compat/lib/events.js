'use strict';
// Promise helpers around EventEmitter events, each with a deadline.

const { inspect } = require('node:util');

const DEFAULT_TIMEOUT_MS = 5_000;

const show = (value) => inspect(value, { depth: 4, breakLength: Infinity });

/**
 * Resolves with the first `event` whose context passes `filter`.
 * Rejects on deadline, or as soon as one of the `failOn` events is emitted.
 * Attach it BEFORE triggering the action that causes the event.
 */
function waitEvent(emitter, event, { timeout = DEFAULT_TIMEOUT_MS, filter = () => true, failOn = [] } = {}) {
  return new Promise((resolve, reject) => {
    const detach = [];
    const settle = (fn, value) => {
      clearTimeout(timer);
      for (const off of detach) off();
      fn(value);
    };
    const listen = (name, handler) => {
      emitter.on(name, handler);
      detach.push(() => emitter.off(name, handler));
    };
    const timer = setTimeout(
      () => settle(reject, new Error(`timed out after ${timeout} ms waiting for '${event}'`)),
      timeout,
    );
    listen(event, (ctx) => {
      let matches;
      try {
        matches = filter(ctx);
      } catch (err) {
        settle(reject, err);
        return;
      }
      if (matches) settle(resolve, ctx);
    });
    for (const name of failOn) {
      listen(name, (ctx) => settle(reject, new Error(`got '${name}' ${show(ctx)} while waiting for '${event}'`)));
    }
  });
}

/** Records every `event` from now on; `until(n)` waits for at least n records. */
function record(emitter, event) {
  const items = [];
  let waiters = [];
  const handler = (ctx) => {
    items.push(ctx);
    waiters = waiters.filter((w) => !w.check());
  };
  emitter.on(event, handler);
  return {
    items,
    stop: () => emitter.off(event, handler),
    until(count, { timeout = DEFAULT_TIMEOUT_MS } = {}) {
      return new Promise((resolve, reject) => {
        const waiter = {
          check() {
            if (items.length < count) return false;
            clearTimeout(timer);
            resolve(items.slice());
            return true;
          },
        };
        const timer = setTimeout(() => {
          waiters = waiters.filter((w) => w !== waiter);
          reject(new Error(`timed out after ${timeout} ms: got ${items.length}/${count} '${event}' events: ${show(items)}`));
        }, timeout);
        if (!waiter.check()) waiters.push(waiter);
      });
    },
  };
}

/**
 * Re-runs the async assertion `fn` until it passes, rethrowing its last error at the
 * deadline. For server-side state that settles asynchronously (e.g. presence cleanup
 * after a disconnect), where there is no event to wait for.
 */
async function eventually(fn, { timeout = DEFAULT_TIMEOUT_MS, interval = 50 } = {}) {
  const deadline = Date.now() + timeout;
  for (;;) {
    try {
      return await fn();
    } catch (err) {
      if (Date.now() >= deadline) throw err;
    }
    await new Promise((resolve) => setTimeout(resolve, interval));
  }
}

module.exports = { waitEvent, record, eventually, DEFAULT_TIMEOUT_MS };
