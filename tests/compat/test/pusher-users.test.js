'use strict';
// Pusher user authentication: pusher.signin() -> pusher:signin_success, events sent to a user
// (sendToUser, i.e. #server-to-user-<id>) reach that user's signed-in sockets only, a forged
// signature closes with 4009, terminateUserConnections closes a user's connections.

const { describe, it, before, after } = require('node:test');
const assert = require('node:assert/strict');
const { startGateway } = require('../lib/gateway');
const { uniqueChannel } = require('../lib/clients');
const {
  APPS, serverSdk, signer, connectedPusher, waitBind, waitState, recordBind, subscribe, signIn,
  nextErrorCode, hmac, rawSocket,
} = require('../lib/pusher');

let gw;
let api;
before(async () => {
  gw = await startGateway();
  api = serverSdk(gw);
});
after(() => gw?.stop());

const userOpts = (id) => ({ user: { user_id: id, user_info: { name: `user ${id}` } } });

/** A connected, signed-in pusher-js client of user `id`. */
async function signedIn(t, id) {
  const client = await connectedPusher(t, gw, userOpts(id));
  const data = await signIn(client.pusher);
  return { ...client, data };
}

describe('pusher users', () => {
  it('signin answers pusher:signin_success with the signed user_data', async (t) => {
    const { pusher, data } = await signedIn(t, '42');
    assert.deepEqual(JSON.parse(data.user_data), { id: '42', user_info: { name: 'user 42' } });
    assert.deepEqual(pusher.user.user_data, { id: '42', user_info: { name: 'user 42' } });
  });

  it('sendToUser reaches every signed-in socket of that user and no one else', async (t) => {
    const tab1 = await signedIn(t, '42');
    const tab2 = await signedIn(t, '42');
    const other = await signedIn(t, '43');
    const anonymous = await connectedPusher(t, gw, userOpts('42')); // never signs in

    const otherGot = recordBind(other.pusher.user, 'notice');
    const anonymousGot = recordBind(anonymous.pusher.connection, 'message');
    const got1 = waitBind(tab1.pusher.user, 'notice');
    const got2 = waitBind(tab2.pusher.user, 'notice');
    const res = await api.sendToUser('42', 'notice', { text: 'for 42' });
    assert.equal(res.status, 200);
    assert.deepEqual(await got1, { text: 'for 42' });
    assert.deepEqual(await got2, { text: 'for 42' });

    // Marker for 43, sent after: it arrives after anything 43 could have got of 42's.
    const marker = waitBind(other.pusher.user, 'notice', { filter: (d) => d.text === 'for 43' });
    await api.sendToUser('43', 'notice', { text: 'for 43' });
    await marker;
    assert.deepEqual(otherGot.items, [{ text: 'for 43' }]);
    assert.deepEqual(anonymousGot.items.filter((m) => m.event === 'notice'), []);
  });

  it('a socket that is not signed in as the user cannot subscribe to #server-to-user-<id>', async (t) => {
    const target = await signedIn(t, '77');
    const raw = rawSocket(t, gw);
    await raw.socketId();
    raw.send('pusher:subscribe', { channel: '#server-to-user-77', auth: '' });
    const marker = uniqueChannel('', 'marker');
    await raw.subscribe(marker);

    const got = waitBind(target.pusher.user, 'secret');
    await api.sendToUser('77', 'secret', { n: 1 });
    await got;
    await api.trigger(marker, 'mark', {});
    await raw.event('mark', marker);
    const leaked = raw.frames.filter((f) => f.event === 'secret');
    assert.deepEqual(leaked.map((f) => f.raw), [], 'the raw socket must not get 77\'s events');
    const answer = raw.frames.find((f) => f.channel === '#server-to-user-77');
    assert.notEqual(answer?.event, 'pusher_internal:subscription_succeeded', answer?.raw);
  });

  it('a signin with a forged signature is closed with 4009', async (t) => {
    const authenticate = (socketId) => {
      const userData = JSON.stringify({ id: '42' });
      return { auth: `${APPS.main.key}:${hmac('not-the-secret', `${socketId}::user::${userData}`)}`, user_data: userData };
    };
    const { pusher } = await connectedPusher(t, gw, { ...userOpts('42'), authenticate });
    const closed = nextErrorCode(pusher, { filter: (code) => code === 4009 });
    pusher.signin();
    assert.equal(await closed, 4009);
    // 40xx: pusher-js does not come back.
    await waitState(pusher, ['disconnected', 'failed']);
  });

  it('a signin signed for another socket id is closed with 4009', async (t) => {
    const authenticate = () => signer().authenticateUser('1234.5678', { id: '42' });
    const { pusher } = await connectedPusher(t, gw, { ...userOpts('42'), authenticate });
    const closed = nextErrorCode(pusher, { filter: (code) => code === 4009 });
    pusher.signin();
    assert.equal(await closed, 4009);
  });

  it('terminateUserConnections closes every connection of that user, only of that user', async (t) => {
    const tab1 = await signedIn(t, '50');
    const tab2 = await signedIn(t, '50');
    const other = await signedIn(t, '51');
    const left = (pusher) => waitBind(pusher.connection, 'state_change', {
      filter: ({ previous }) => previous === 'connected',
      what: 'the connection of user 50 to leave state connected',
    });
    const left1 = left(tab1.pusher);
    const left2 = left(tab2.pusher);
    const otherStates = recordBind(other.pusher.connection, 'state_change');
    const res = await api.terminateUserConnections('50');
    assert.equal(res.status, 200);
    await left1;
    await left2;

    // 51 stays, on its very connection.
    const { channel } = await subscribe(other.pusher, uniqueChannel('', 'still-here'));
    const got = waitBind(channel, 'ping');
    await api.trigger(channel.name, 'ping', {});
    await got;
    assert.deepEqual(otherStates.items, []);
    assert.equal(other.pusher.connection.socket_id, other.socketId);
  });
});
