// The store's ordering by seq and its storage round trip (node --test).
import assert from "node:assert/strict";
import { test } from "node:test";

import { KEEP_FINISHED_MS, MAX_STORED, createStore, fromStorage, toStorage } from "../../epm/static/js/store.js";

const job = (id, seq, extra = {}) => ({ id, seq, status: "running",
  created_at: `2026-12-01T00:00:${String(seq % 60).padStart(2, "0")}.000Z`, ...extra });

test("an update is taken only when its seq is newer than the one held", () => {
  const store = createStore();
  store.apply([job("a", 5, { progress: 50 })]);
  assert.equal(store.apply([job("a", 4, { progress: 40 })]).length, 0);
  assert.equal(store.apply([job("a", 5, { progress: 45 })]).length, 0);
  assert.equal(store.get("a").progress, 50);
  assert.equal(store.apply([job("a", 6, { progress: 60 })]).length, 1);
  assert.equal(store.get("a").progress, 60);
});

test("events arriving out of order end at the newest state", () => {
  const store = createStore();
  const events = [3, 1, 4, 2, 5].map((seq) => job("a", seq, { progress: seq * 10 }));
  for (const event of events) store.apply([event]);
  assert.equal(store.get("a").progress, 50);
});

test("listeners hear each change once, with the state it replaced", () => {
  const store = createStore();
  const heard = [];
  store.subscribe((change) => heard.push(change));
  store.apply([job("a", 1)]);
  store.apply([job("a", 1)]); // a duplicate: nothing to tell
  store.apply([job("a", 2, { status: "completed" })]);
  assert.equal(heard.length, 3); // the call at subscribe, then two changes
  assert.equal(heard[2].changed[0].previous.seq, 1);
  assert.equal(heard[2].changed[0].job.status, "completed");
});

test("an acknowledgement survives newer states of the job", () => {
  const store = createStore();
  store.apply([job("a", 1)]);
  store.markAcknowledged("a");
  store.apply([job("a", 2, { status: "completed" })]);
  assert.equal(store.get("a").acknowledged, true);
});

test("all() lists newest first and active() only pending and running jobs", () => {
  const store = createStore();
  store.apply([job("old", 1), job("new", 2, { status: "failed" }), job("mid", 1, { created_at: "2026-12-01T00:00:01.500Z" })]);
  assert.deepEqual(store.all().map((j) => j.id), ["new", "mid", "old"]);
  assert.deepEqual(store.active().map((j) => j.id), ["mid", "old"]);
});

test("restore keeps active jobs and jobs finished within a day, and reads nothing from junk", () => {
  const now = Date.parse("2026-12-02T12:00:00Z");
  const recent = job("recent", 2, { status: "completed", completed_at: new Date(now - 3600e3).toISOString() });
  const stale = job("stale", 3, { status: "completed", completed_at: new Date(now - KEEP_FINISHED_MS - 1).toISOString() });
  const running = job("running", 1);
  const restored = fromStorage(toStorage([recent, stale, running], now));
  assert.deepEqual(restored.map((j) => j.id).sort(), ["recent", "running"]);
  assert.deepEqual(fromStorage("{not json"), []);
  assert.deepEqual(fromStorage(null), []);
  assert.deepEqual(fromStorage('{"jobs": "nope"}'), []);
});

test("a restored state older than what the page already holds is ignored", () => {
  const store = createStore();
  store.apply([job("a", 9, { progress: 90 })]);
  store.apply(fromStorage(toStorage([job("a", 3, { progress: 30 })], Date.now())));
  assert.equal(store.get("a").progress, 90);
});

test("storage holds at most MAX_STORED jobs", () => {
  const many = Array.from({ length: MAX_STORED + 20 }, (_, n) => job(`j${n}`, n + 1));
  assert.equal(fromStorage(toStorage(many, Date.now())).length, MAX_STORED);
});
