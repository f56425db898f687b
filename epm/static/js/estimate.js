// estimate.js — an honest guess of the time left: the median of this user's earlier completed runs of the
// same operation (their real durations, as the job list gives them), minus the time already spent. No DOM.

const MAX_SAMPLES = 20;

/** Seconds a finished job ran, or null when it lacks a start or an end. */
export function ranSeconds(job) {
  const start = Date.parse(job.started_at || "");
  const end = Date.parse(job.completed_at || "");
  return Number.isFinite(start) && Number.isFinite(end) && end >= start ? (end - start) / 1000 : null;
}

/** The median duration in seconds of ``jobs``' completed runs of ``jobType`` (newest 20), or null for none. */
export function typicalSeconds(jobs, jobType) {
  const samples = jobs.filter((job) => job.job_type === jobType && job.status === "completed")
    .map(ranSeconds).filter((seconds) => seconds !== null).slice(0, MAX_SAMPLES).sort((a, b) => a - b);
  if (!samples.length) return null;
  const middle = Math.floor(samples.length / 2);
  return samples.length % 2 ? samples[middle] : (samples[middle - 1] + samples[middle]) / 2;
}

/** ``{left, samples}``: seconds probably left for a running ``job`` (0 when it runs longer than usual), or null. */
export function timeLeft(job, jobs, elapsed) {
  if (job.status !== "running" || elapsed === null) return null;
  const typical = typicalSeconds(jobs.filter((other) => other.id !== job.id), job.job_type);
  return typical === null ? null : Math.max(0, typical - elapsed);
}
