// steps.js — a job's step timeline as the server keeps it (``job.timeline``: each step its operation declares,
// with when it started and ended; epm/jobs/steps.py); no DOM. Between two updates only the current step's
// time so far moves, from the clock: nothing here invents progress.

const ACTIVE = new Set(["pending", "running"]);

/**
 * ``[{name, state, seconds}]``: state "done", "current", "stopped" (where a failed or cancelled job ended) or
 * "todo"; seconds is a done step's duration, or the current one's whole seconds so far at ``now``. A job without
 * a timeline yet (pending) shows ``declared``, the operation's step names, all to come.
 */
export function stepStates(job, declared = [], now = Date.now()) {
  const timeline = job.timeline;
  if (!timeline || !Array.isArray(timeline.steps)) {
    const state = job.status === "completed" ? "done" : "todo";
    return declared.map((name) => ({ name, state, seconds: null }));
  }
  const at = timeline.step ?? null;
  return timeline.steps.map((step, index) => {
    let state = "todo";
    let seconds = step.seconds ?? null;
    if (job.status === "completed" || (at !== null && index < at)) {
      state = "done";
    } else if (index === at && !ACTIVE.has(job.status)) {
      state = "stopped";
    } else if (index === at) {
      state = "current";
      const started = Date.parse(step.started_at || "");
      seconds = Number.isFinite(started) ? Math.max(0, Math.floor((now - started) / 1000)) : null;
    }
    return { name: step.name, state, seconds };
  });
}

/** "Step 3 of 8" while a step runs, or "". */
export function stepSummary(job) {
  const timeline = job.timeline;
  const at = timeline ? timeline.step ?? null : null;
  if (job.status !== "running" || at === null || !Array.isArray(timeline.steps)) return "";
  return `Step ${at + 1} of ${timeline.steps.length}`;
}

/**
 * A step's duration as a CI run page writes it, rounded down: "0.7 s", "42 s", "1 min 05 s", "1 h 02 min"
 * ("" for none); a running step's time so far in whole seconds. The server's ``steps.step_time`` is the same.
 */
export function stepTime(seconds, running = false) {
  if (seconds === null || seconds === undefined || !Number.isFinite(seconds)) return "";
  if (seconds < 10 && !running) return `${(Math.floor(Math.max(0, seconds) * 10) / 10).toFixed(1)} s`;
  const whole = Math.max(0, Math.floor(seconds));
  if (whole < 60) return `${whole} s`;
  if (whole < 3600) return `${Math.floor(whole / 60)} min ${String(whole % 60).padStart(2, "0")} s`;
  return `${Math.floor(whole / 3600)} h ${String(Math.floor((whole % 3600) / 60)).padStart(2, "0")} min`;
}
