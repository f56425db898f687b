// The transport's leader election, hand-over, relay and backoff, with the browser's parts faked (node --test).
import assert from "node:assert/strict";
import { test } from "node:test";

import { createStore } from "../../epm/static/js/store.js";
import { POLL_VISIBLE_MS, createTransport, reconnectDelay } from "../../epm/static/js/transport.js";

/** Web Locks as a browser has them: one holder per name, the others wait in order. */
class FakeLocks {
  constructor() {
    this.waiting = [];
    this.holder = null;
  }
  request(name, callback) {
    this.waiting.push(callback);
    this.grant();
  }
  grant() {
    if (this.holder || !this.waiting.length) return;
    this.holder = this.waiting.shift();
    this.holder();
  }
  /** The leading tab closed: its lock goes to the next tab waiting. */
  release() {
    this.holder = null;
    this.grant();
  }
}

/** One BroadcastChannel bus: a message reaches every other channel of the same name. */
function channelBus() {
  const channels = [];
  return class FakeChannel {
    constructor(name) {
      this.name = name;
      this.onmessage = null;
      channels.push(this);
    }
    postMessage(data) {
      for (const other of channels) if (other !== this && other.name === this.name) other.onmessage?.({ data });
    }
  };
}

function fakeEventSources() {
  const opened = [];
  class FakeEventSource {
    constructor(url) {
      this.url = url;
      this.listeners = {};
      this.closed = false;
      opened.push(this);
    }
    addEventListener(type, listener) {
      this.listeners[type] = listener;
    }
    send(job) {
      this.listeners.job({ data: JSON.stringify(job) });
    }
    close() {
      this.closed = true;
    }
  }
  return { FakeEventSource, opened };
}

function fakeTimers() {
  const timers = new Map();
  let next = 1;
  return {
    timers,
    setTimeout: (fn, ms) => {
      timers.set(next, { fn, ms });
      return next++;
    },
    clearTimeout: (id) => timers.delete(id),
  };
}

/** A tab: its store, its transport, the modes it went through and its list refreshes. */
function tab(env) {
  const store = createStore();
  const modes = [];
  let refreshes = 0;
  const transport = createTransport({
    userId: "7",
    env,
    receive: (jobs, { fromStream }) => {
      const changed = store.apply(jobs);
      if (fromStream) transport.relay(changed.map((c) => c.job));
    },
    refresh: async () => {
      refreshes += 1;
    },
    setMode: (mode) => modes.push(mode),
  });
  transport.start();
  return { store, transport, modes, refreshes: () => refreshes };
}

function browser() {
  const { FakeEventSource, opened } = fakeEventSources();
  const timers = fakeTimers();
  const env = { locks: new FakeLocks(), BroadcastChannel: channelBus(), EventSource: FakeEventSource,
    setTimeout: timers.setTimeout, clearTimeout: timers.clearTimeout, isHidden: () => false };
  return { env, opened, timers };
}

test("one tab leads with the only stream and relays its events to the other tabs", () => {
  const { env, opened } = browser();
  const first = tab(env);
  const second = tab(env);
  assert.equal(opened.length, 1, "one stream per browser");
  assert.equal(first.transport.leading, true);
  assert.equal(second.transport.leading, false);
  assert.deepEqual(second.modes, ["follower"]);
  opened[0].onopen();
  opened[0].send({ id: "j", seq: 3, status: "running", progress: 30 });
  assert.equal(first.store.get("j").progress, 30);
  assert.equal(second.store.get("j").progress, 30, "relayed");
  opened[0].send({ id: "j", seq: 3, status: "running", progress: 30 }); // a duplicate is not relayed again
});

test("when the leading tab closes, the next tab takes over with a stream of its own", () => {
  const { env, opened } = browser();
  const first = tab(env);
  const second = tab(env);
  first.transport.closeStream();
  env.locks.release();
  assert.equal(second.transport.leading, true);
  assert.equal(opened.length, 2);
  assert.equal(opened[0].closed, true);
  opened[1].onopen();
  assert.deepEqual(second.modes, ["follower", "leader"]);
  opened[1].send({ id: "k", seq: 1, status: "running" });
  assert.ok(second.store.get("k"));
});

test("a failing stream falls back to polling and reconnects later and later", () => {
  const { env, opened, timers } = browser();
  const only = tab(env);
  opened[0].onerror();
  assert.equal(only.modes.at(-1), "polling");
  assert.equal(only.refreshes(), 1, "polls at once");
  const delays = [...timers.timers.values()].map((t) => t.ms).sort((a, b) => a - b);
  assert.deepEqual(delays, [reconnectDelay(1), POLL_VISIBLE_MS]);
  assert.deepEqual([1, 2, 3, 6, 7, 20].map(reconnectDelay), [1000, 2000, 4000, 30000, 30000, 30000]);
  const reconnect = [...timers.timers.values()].find((t) => t.ms === reconnectDelay(1));
  reconnect.fn();
  assert.equal(opened.length, 2);
  opened[1].onopen();
  assert.equal(only.modes.at(-1), "leader");
  assert.ok(![...timers.timers.values()].some((t) => t.ms === POLL_VISIBLE_MS), "polling stops once the stream is back");
});

test("without Web Locks a tab leads on its own", () => {
  const { env, opened } = browser();
  const alone = tab({ ...env, locks: undefined });
  assert.equal(alone.transport.leading, true);
  assert.equal(opened.length, 1);
});
