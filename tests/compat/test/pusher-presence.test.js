'use strict';
// Pusher presence channels: members on subscription_succeeded, member_added on a user's first
// connection, member_removed on its last, never for yourself, and the member limit.

const { describe, it, before, after } = require('node:test');
const assert = require('node:assert/strict');
const { startGateway } = require('../lib/gateway');
const { uniqueChannel } = require('../lib/clients');
const { eventually } = require('../lib/events');
const {
  serverSdk, connectedPusher, waitBind, recordBind, subscribe, subscribed, subscribeRefused, body, rawSocket,
  membersOf, sortedIds,
} = require('../lib/pusher');

let gw;
let api;
before(async () => {
  gw = await startGateway();
  api = serverSdk(gw);
});
after(() => gw?.stop());

const user = (id, info = { name: id }) => ({ user: { user_id: id, user_info: info } });

/** The users of `channel` through the HTTP API, sorted. */
const usersOf = async (channel) => sortedIds((await body(api.get({ path: `/channels/${channel}/users` }))).users);
const subscriptionCount = async (channel) =>
  (await body(api.get({ path: `/channels/${channel}`, params: { info: 'subscription_count' } }))).subscription_count ?? 0;

describe('pusher presence', () => {
  it('subscription_succeeded lists the members with their info and me; others get member_added', async (t) => {
    const channel = uniqueChannel('presence-', 'room');
    const alice = await connectedPusher(t, gw, user('alice', { name: 'Alice' }));
    const { channel: aliceSub, data: aliceMembers } = await subscribe(alice.pusher, channel);
    assert.equal(aliceMembers.count, 1);
    assert.deepEqual(membersOf(aliceMembers), { alice: { name: 'Alice' } });
    assert.deepEqual(aliceMembers.me, { id: 'alice', info: { name: 'Alice' } });

    const aliceSees = waitBind(aliceSub, 'pusher:member_added');
    const bob = await connectedPusher(t, gw, user('bob', { name: 'Bob', role: 'admin' }));
    const bobSub = bob.pusher.subscribe(channel);
    const bobAdded = recordBind(bobSub, 'pusher:member_added');
    const bobMembers = await subscribed(bobSub);
    assert.equal(bobMembers.count, 2);
    assert.deepEqual(membersOf(bobMembers), { alice: { name: 'Alice' }, bob: { name: 'Bob', role: 'admin' } });
    assert.deepEqual(bobMembers.me, { id: 'bob', info: { name: 'Bob', role: 'admin' } });
    assert.deepEqual(await aliceSees, { id: 'bob', info: { name: 'Bob', role: 'admin' } });
    assert.equal(aliceMembers.count, 2);

    // No member_added for yourself: a third member's arrival is the marker.
    const bobSeesCarol = waitBind(bobSub, 'pusher:member_added', { filter: (m) => m.id === 'carol' });
    const carol = await connectedPusher(t, gw, user('carol'));
    await subscribe(carol.pusher, channel);
    await bobSeesCarol;
    assert.deepEqual(bobAdded.items.map((m) => m.id), ['carol'], 'bob never hears of his own arrival');
    assert.deepEqual(await usersOf(channel), ['alice', 'bob', 'carol']);
  });

  it('a user joins with its first connection and leaves with its last', async (t) => {
    const channel = uniqueChannel('presence-', 'tabs');
    const watcher = await connectedPusher(t, gw, user('watcher'));
    const { channel: watch } = await subscribe(watcher.pusher, channel);
    const added = recordBind(watch, 'pusher:member_added');
    const removed = recordBind(watch, 'pusher:member_removed');

    const tab1 = await connectedPusher(t, gw, user('dave'));
    await subscribe(tab1.pusher, channel);
    const tab2 = await connectedPusher(t, gw, user('dave'));
    const { data: tab2Members } = await subscribe(tab2.pusher, channel);
    assert.deepEqual(Object.keys(membersOf(tab2Members)).sort(), ['dave', 'watcher']);
    // erin's arrival comes after both of dave's subscriptions: the marker.
    const erin = await connectedPusher(t, gw, user('erin'));
    await subscribe(erin.pusher, channel);
    await eventually(() => assert.ok(added.items.some((m) => m.id === 'erin'), 'erin joined'));
    assert.deepEqual(added.items.map((m) => m.id), ['dave', 'erin'], 'dave is added once');
    assert.equal(await subscriptionCount(channel), 4);
    assert.deepEqual(await usersOf(channel), ['dave', 'erin', 'watcher']);

    // dave's first tab goes: dave stays.
    tab1.pusher.disconnect();
    await eventually(async () => assert.equal(await subscriptionCount(channel), 3));
    assert.deepEqual(await usersOf(channel), ['dave', 'erin', 'watcher']);
    // erin's leaving is the marker: nothing about dave came before it.
    const erinGone = waitBind(watch, 'pusher:member_removed', { filter: (m) => m.id === 'erin' });
    erin.pusher.unsubscribe(channel);
    await erinGone;
    assert.deepEqual(removed.items.map((m) => m.id), ['erin']);
    assert.equal(watch.members.get('dave')?.id, 'dave');

    // The last tab goes: dave leaves.
    const daveGone = waitBind(watch, 'pusher:member_removed', { filter: (m) => m.id === 'dave' });
    tab2.pusher.disconnect();
    assert.deepEqual(await daveGone, { id: 'dave', info: { name: 'dave' } });
    assert.equal(watch.members.count, 1);
    await eventually(async () => assert.deepEqual(await usersOf(channel), ['watcher']));
  });

  it('unsubscribing from the presence channel removes the member, the connection stays', async (t) => {
    const channel = uniqueChannel('presence-', 'unsub');
    const watcher = await connectedPusher(t, gw, user('w'));
    const { channel: watch } = await subscribe(watcher.pusher, channel);
    const frank = await connectedPusher(t, gw, user('frank'));
    const frankAdded = waitBind(watch, 'pusher:member_added');
    await subscribe(frank.pusher, channel);
    await frankAdded;
    const frankRemoved = waitBind(watch, 'pusher:member_removed');
    frank.pusher.unsubscribe(channel);
    assert.equal((await frankRemoved).id, 'frank');
    assert.equal(frank.pusher.connection.state, 'connected');
  });

  it('the 101st user is refused with subscription_error; members already in may add connections', { timeout: 60_000 }, async (t) => {
    const channel = uniqueChannel('presence-', 'full');
    const fillers = [];
    for (let i = 0; i < 100; i++) {
      const raw = rawSocket(t, gw);
      fillers.push(raw.subscribe(channel, { channelData: { user_id: `u${i}`, user_info: {} } }));
    }
    await Promise.all(fillers);
    await eventually(async () => assert.equal((await usersOf(channel)).length, 100));

    const late = await connectedPusher(t, gw, user('late'));
    const error = await subscribeRefused(late.pusher, channel);
    assert.ok(error, 'subscription_error');
    assert.equal((await usersOf(channel)).length, 100, 'still 100 members');
    assert.ok(!(await usersOf(channel)).includes('late'));

    // u0 is a member already: another connection of u0 is no new member.
    const again = await connectedPusher(t, gw, user('u0'));
    const { data } = await subscribe(again.pusher, channel);
    assert.equal(data.count, 100);
  });

  it('a presence subscription without channel_data is refused', async (t) => {
    const channel = uniqueChannel('presence-', 'nodata');
    const raw = rawSocket(t, gw);
    await assert.rejects(raw.subscribe(channel), /refused/);
  });
});
