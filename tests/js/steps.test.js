// A job's step timeline as the server sends it (node --test).
import assert from "node:assert/strict";
import { test } from "node:test";

import { stepStates, stepSummary, stepTime } from "../../epm/static/js/steps.js";

const NAMES = ["Reading the session", "Summarising the sources and their key facts", "Saving the research report"];
const T0 = Date.parse("2026-12-01T10:00:00.000Z");
const at = (seconds) => new Date(T0 + seconds * 1000).toISOString();

/** A timeline whose steps ``ended`` (durations in seconds) are over and whose next one started at the end. */
function timeline(ended, running = true) {
  let clock = 0;
  const steps = NAMES.map((name) => ({ name, started_at: null, ended_at: null, seconds: null }));
  ended.forEach((seconds, index) => {
    Object.assign(steps[index], { started_at: at(clock), ended_at: at(clock + seconds), seconds });
    clock += seconds;
  });
  const step = running ? ended.length : ended.length - 1;
  if (running) steps[step].started_at = at(clock);
  return { step, steps };
}

test("done steps have their durations, the current one its whole seconds so far, the rest are to come", () => {
  const job = { status: "running", timeline: timeline([0.7]) };
  assert.deepEqual(stepStates(job, NAMES, T0 + 4_250), [
    { name: NAMES[0], state: "done", seconds: 0.7 },
    { name: NAMES[1], state: "current", seconds: 3 },
    { name: NAMES[2], state: "todo", seconds: null },
  ]);
  assert.equal(stepSummary(job), "Step 2 of 3");
});

test("a completed job has every step done; a failed one stops at the step it was in", () => {
  const done = stepStates({ status: "completed", timeline: timeline([0.7, 2, 0.4], false) }, NAMES);
  assert.deepEqual(done.map((step) => [step.state, step.seconds]), [["done", 0.7], ["done", 2], ["done", 0.4]]);
  const failed = stepStates({ status: "failed", timeline: timeline([0.7, 1.5], false) }, NAMES);
  assert.deepEqual(failed.map((step) => step.state), ["done", "stopped", "todo"]);
  assert.equal(failed[1].seconds, 1.5);
  assert.equal(stepSummary({ status: "failed", timeline: timeline([0.7, 1.5], false) }), "");
});

test("before its timeline exists a job shows the declared steps, all to come", () => {
  assert.deepEqual(stepStates({ status: "pending", timeline: null }, NAMES).map((step) => step.state),
    ["todo", "todo", "todo"]);
  assert.deepEqual(stepStates({ status: "completed" }, NAMES).map((step) => step.state), ["done", "done", "done"],
    "a job recorded before there were timelines");
  assert.deepEqual(stepStates({ status: "running" }, []), [], "an operation without declared steps");
  assert.equal(stepSummary({ status: "running" }), "");
});

test("step times read like a CI run page and match the server's steps.step_time", () => {
  assert.deepEqual([null, 0.04, 0.7, 9.96, 42.5, 65, 3720].map((seconds) => stepTime(seconds)),
    ["", "0.0 s", "0.7 s", "9.9 s", "42 s", "1 min 05 s", "1 h 02 min"]);
  assert.equal(stepTime(3.8, true), "3 s");
});
