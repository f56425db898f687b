// The time-left estimate from earlier runs (node --test).
import assert from "node:assert/strict";
import { test } from "node:test";

import { timeLeft, typicalSeconds } from "../../epm/static/js/estimate.js";

const run = (id, seconds, extra = {}) => ({ id, job_type: "epm_generation", status: "completed",
  started_at: "2026-12-01T10:00:00.000Z", completed_at: new Date(Date.parse("2026-12-01T10:00:00Z") + seconds * 1000).toISOString(),
  ...extra });

test("the typical duration is the median of the completed runs of that operation", () => {
  const jobs = [run("a", 10), run("b", 30), run("c", 20), run("d", 500, { job_type: "web_research" }),
    run("e", 900, { status: "failed" })];
  assert.equal(typicalSeconds(jobs, "epm_generation"), 20);
  assert.equal(typicalSeconds([run("a", 10), run("b", 30)], "epm_generation"), 20);
  assert.equal(typicalSeconds([], "epm_generation"), null);
});

test("time left is the typical duration minus the time spent, never below zero", () => {
  const running = { id: "now", job_type: "epm_generation", status: "running" };
  const earlier = [run("a", 60), run("b", 60)];
  assert.equal(timeLeft(running, earlier, 15), 45);
  assert.equal(timeLeft(running, earlier, 90), 0);
  assert.equal(timeLeft(running, [], 15), null, "no earlier run: no guess");
  assert.equal(timeLeft({ ...running, status: "pending" }, earlier, 0), null);
});
