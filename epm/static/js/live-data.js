// live-data.js — what the server tells every page about operations and the user's sessions (base.html's
// #epm-live-data): labels and steps come from the operations' own declarations, never from this code.

let data = null;

function load() {
  if (data) return data;
  data = { operations: {}, sessions: {} };
  const node = typeof document === "undefined" ? null : document.getElementById("epm-live-data");
  if (node) {
    try {
      data = { ...data, ...JSON.parse(node.textContent) };
    } catch (error) {
      console.error("epm: the page's live data could not be read", error);
    }
  }
  return data;
}

/** ``{title, ready, view_label, running, steps}`` of an operation, with fallbacks from the job itself. */
export function operationInfo(job) {
  const known = load().operations[job.job_type] || {};
  const title = job.title || known.title || job.job_type || "Job";
  return {
    title,
    ready: known.ready || `${title} finished`,
    viewLabel: known.view_label || "View result",
    running: known.running || `${title} in progress…`,
    steps: known.steps || [],
  };
}

/** The name of the user's session ``id`` ("Session 12" when this page does not know it), or null for none. */
export function sessionName(id) {
  if (id === null || id === undefined || id === "") return null;
  return load().sessions[String(id)] || `Session ${id}`;
}

/** What to offer for a failure whose fix is in the session (``{label, field, retry}``), or null. */
export function fixFor(job) {
  const fix = job.session_id ? load().fixes?.[job.error_code || ""] : null;
  if (!fix) return null;
  return { ...fix, href: `/sessions/${encodeURIComponent(job.session_id)}/edit#${fix.field}` };
}

/** Remember names learnt later (a session created in another tab). */
export function learnSessions(names) {
  Object.assign(load().sessions, names);
}
