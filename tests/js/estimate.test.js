// The time left from the server's estimate and the job's timeline (node --test); the cases of the server's
// test_time_left_counts_the_steps_ahead_and_what_is_left_of_the_current_one, so both sides agree.
import assert from "node:assert/strict";
import { test } from "node:test";

import { basisText, timeLeft } from "../../epm/static/js/estimate.js";

const NOW = Date.parse("2026-12-01T10:00:10.000Z");
const ago = (seconds) => new Date(NOW - seconds * 1000).toISOString();
const estimate = { basis: "user", runs: 3, seconds: 30, steps: [10, 10, 10] };
const plan = () => ({ step: null, steps: ["A", "B", "C"].map((name) => ({ name, started_at: null, ended_at: null,
  seconds: null })) });

function job(timeline, extra = {}) {
  return { status: "running", started_at: ago(14), estimate, timeline, ...extra };
}

test("time left counts the steps ahead and what is left of the current one", () => {
  const timeline = plan();
  assert.equal(timeLeft(job(timeline), NOW), 30, "running, no step yet: all of them");
  timeline.step = 1;
  timeline.steps[1].started_at = ago(4);
  assert.equal(timeLeft(job(timeline), NOW), 16, "6 s of B and 10 s of C");
  timeline.steps[1].started_at = ago(40);
  assert.equal(timeLeft(job(timeline), NOW), 10, "B overran: C is still ahead");
  const unknown = { ...estimate, steps: [10, null, 10] };
  assert.equal(timeLeft(job(timeline, { estimate: unknown }), NOW), 16, "a step without a median: the total less 14 s");
});

test("no estimate, or a job that ended, has no time left", () => {
  assert.equal(timeLeft(job(plan(), { estimate: null }), NOW), null);
  assert.equal(timeLeft(job(plan(), { status: "completed" }), NOW), null);
  assert.equal(timeLeft(job(null, { started_at: null, status: "pending" }), NOW), 30, "the whole run is ahead");
});

test("the basis says whose runs it comes from", () => {
  assert.equal(basisText({ basis: "user", runs: 5 }), "your last 5 runs");
  assert.equal(basisText({ basis: "everyone", runs: 1 }), "1 earlier run by all users");
  assert.equal(basisText({ basis: "everyone", runs: 12 }), "12 earlier runs by all users");
});
