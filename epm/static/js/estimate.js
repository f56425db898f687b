// estimate.js — how long a job probably has left, from the server's estimate (the median durations of earlier
// completed runs of its operation, the user's or everyone's: epm/jobs/steps.py) and its timeline; no DOM.
// The rule is the server's ``job.time_left``: the medians of the steps ahead plus what is left of the current
// step's, else the median total less the time spent. No history: no estimate.

const ACTIVE = new Set(["pending", "running"]);

const sum = (values) => values.reduce((total, value) => total + value, 0);

function secondsSince(iso, now) {
  const since = Date.parse(iso || "");
  return Number.isFinite(since) ? (now - since) / 1000 : 0;
}

/** Seconds probably left for an active ``job`` at ``now`` (0 when it runs longer than usual), or null. */
export function timeLeft(job, now = Date.now()) {
  const estimate = job.estimate;
  if (!estimate || !ACTIVE.has(job.status)) return null;
  const medians = estimate.steps || [];
  const timeline = job.timeline;
  if (timeline && medians.length && !medians.includes(null) && medians.length === timeline.steps.length) {
    const at = timeline.step ?? null;
    if (at === null) return sum(medians);
    const spent = secondsSince(timeline.steps[at].started_at, now);
    return Math.max(0, medians[at] - spent) + sum(medians.slice(at + 1));
  }
  return Math.max(0, estimate.seconds - secondsSince(job.started_at, now));
}

/** Whose runs the estimate comes from: "your last 5 runs", "2 earlier runs by all users". */
export function basisText(estimate) {
  const runs = estimate.runs;
  if (estimate.basis === "user") return `your last ${runs} runs`;
  return `${runs} earlier run${runs === 1 ? "" : "s"} by all users`;
}
