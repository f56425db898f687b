// steps.js — where a job is in its operation's declared steps (``@operation(steps=...)``); no DOM.
//
// A step starts when the job reports its message; a message that is not a step (research's "Fetching
// example.com (1 of 3)") belongs to the step that came before it.

const lastStep = new Map(); // job id -> index of the last step seen on this page

/** ``[{label, state}]`` with state "done", "current" or "todo" (all "done" once the job completed). */
export function stepStates(job, steps) {
  if (!steps || !steps.length) return [];
  const matched = steps.indexOf(job.message || "");
  let current = matched >= 0 ? matched : (lastStep.get(job.id) ?? 0);
  if (matched >= 0) lastStep.set(job.id, matched);
  if (job.status === "completed") current = steps.length;
  if (job.status === "pending") current = -1;
  return steps.map((label, index) => {
    let state = "todo";
    if (index < current) state = "done";
    else if (index === current) state = job.status === "running" ? "current" : "stopped";
    return { label, state };
  });
}

/** "Step 3 of 8", or "" for an operation without declared steps. */
export function stepSummary(job, steps) {
  const states = stepStates(job, steps);
  const at = states.findIndex((step) => step.state === "current");
  return at >= 0 ? `Step ${at + 1} of ${states.length}` : "";
}
