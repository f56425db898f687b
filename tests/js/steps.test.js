// Where a job is in its declared steps (node --test).
import assert from "node:assert/strict";
import { test } from "node:test";

import { stepStates, stepSummary } from "../../epm/static/js/steps.js";

const STEPS = ["Reading the session", "Finding the key terms across sources", "Saving the research report"];
const states = (job) => stepStates(job, STEPS).map((step) => step.state);

test("the reported step is current, the ones before it done, the rest to come", () => {
  const job = { id: "a", status: "running", message: "Finding the key terms across sources" };
  assert.deepEqual(states(job), ["done", "current", "todo"]);
  assert.equal(stepSummary(job, STEPS), "Step 2 of 3");
});

test("a message that is not a step stays in the step before it", () => {
  assert.deepEqual(states({ id: "b", status: "running", message: "Reading the session" }), ["current", "todo", "todo"]);
  assert.deepEqual(states({ id: "b", status: "running", message: "Fetching example.com (1 of 3)" }),
    ["current", "todo", "todo"]);
});

test("a completed job has every step done; a pending one none started; a failed one stops where it was", () => {
  assert.deepEqual(states({ id: "c", status: "completed", message: "" }), ["done", "done", "done"]);
  assert.deepEqual(states({ id: "d", status: "pending", message: "Waiting to start" }), ["todo", "todo", "todo"]);
  assert.deepEqual(states({ id: "e", status: "failed", message: "Finding the key terms across sources" }),
    ["done", "stopped", "todo"]);
});

test("an operation without declared steps has no timeline", () => {
  assert.deepEqual(stepStates({ id: "f", status: "running", message: "Step 2 of 5" }, []), []);
  assert.equal(stepSummary({ id: "f", status: "running", message: "Step 2 of 5" }, []), "");
});
