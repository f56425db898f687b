// store.js — the job state of one page, ordered by seq alone; no DOM, no network (unit-tested by node --test).
//
// An update whose seq is not newer than the one held is dropped, so duplicates and reordering (the stream,
// the relay from the leading tab, a poll, a restore from storage) are harmless.

const ACTIVE = new Set(["pending", "running"]);
/** Finished jobs are kept in storage this long, and at most this many jobs in all. */
export const KEEP_FINISHED_MS = 24 * 3600 * 1000;
export const MAX_STORED = 100;

export function isActive(job) {
  return ACTIVE.has(job.status);
}

export function createStore() {
  const jobs = new Map();
  const listeners = new Set();

  function notify(change) {
    for (const listener of listeners) {
      try {
        listener(change);
      } catch (error) {
        console.error("epm: a job widget failed", error);
      }
    }
  }

  /** Every job held, newest first. */
  function all() {
    return [...jobs.values()].sort((a, b) => (b.created_at || "").localeCompare(a.created_at || ""));
  }

  return {
    all,
    active: () => all().filter(isActive),
    get: (id) => jobs.get(id),

    /** Call ``listener({changed, removed})`` now with nothing changed, and after every change. */
    subscribe(listener) {
      listeners.add(listener);
      listener({ changed: [], removed: [] });
      return () => listeners.delete(listener);
    },

    /** Take the jobs newer than held; return the changes (``[{job, previous}]``) after telling the listeners. */
    apply(incoming) {
      const changed = [];
      for (const job of incoming) {
        if (!job || !job.id) continue;
        const previous = jobs.get(job.id);
        if (previous && (previous.seq || 0) >= (job.seq || 0)) {
          if (job.acknowledged && !previous.acknowledged) previous.acknowledged = true;
          continue;
        }
        const next = { ...job };
        if (previous && previous.acknowledged) next.acknowledged = true;
        jobs.set(job.id, next);
        changed.push({ job: next, previous });
      }
      if (changed.length) notify({ changed, removed: [] });
      return changed;
    },

    remove(id) {
      if (!jobs.delete(id)) return false;
      notify({ changed: [], removed: [id] });
      return true;
    },

    markAcknowledged(id) {
      const job = jobs.get(id);
      if (job) job.acknowledged = true;
    },
  };
}

/** What to keep in storage at ``now``: the active jobs and those finished within a day, newest first. */
export function toStorage(jobs, now) {
  const kept = jobs.filter((job) => {
    if (isActive(job)) return true;
    const ended = Date.parse(job.completed_at || job.updated_at || job.created_at || "");
    return Number.isFinite(ended) && now - ended < KEEP_FINISHED_MS;
  }).slice(0, MAX_STORED);
  return JSON.stringify({ saved_at: new Date(now).toISOString(), jobs: kept });
}

/** The jobs of a stored text (``[]`` for nothing, or for anything unreadable). */
export function fromStorage(text) {
  let saved;
  try {
    saved = JSON.parse(text || "null");
  } catch {
    return [];
  }
  return saved && Array.isArray(saved.jobs) ? saved.jobs : [];
}
