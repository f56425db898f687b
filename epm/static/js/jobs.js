// jobs.js — the one owner of job state on a page, and the only module widgets import for it.
//
// It joins the parts: the store (state, ordered by seq), localStorage (paint at once on the next page),
// the transport (leader, stream, relay, polling) and the API client. Widgets subscribe and render.

import { ApiError, fetchChanges, fetchJob, fetchList, metaContent, post } from "./api.js";
import { createStore, fromStorage, isActive, toStorage } from "./store.js";
import { createTransport } from "./transport.js";

export { ApiError, isActive, post };

/** The signed-in user (null on a page without one): jobs and widget settings are kept per user. */
export const userId = metaContent("epm-user");
const storageKey = `epm:jobs:${userId}`;
const store = createStore();
let transport = null;
let etag = null;
let version = null;
let polls = 0;
let persistTimer = null;
let forgotten = false;

export const all = store.all;
export const active = store.active;
export const get = store.get;
export const subscribe = store.subscribe;

/** While polling, every this many rounds ask for the whole list (a diff does not say which jobs left it). */
export const FULL_LIST_EVERY = 10;

/** Paint from localStorage, then go live (leader or follower). Call once per page, after widgets subscribed. */
export function start() {
  if (!userId) return;
  store.apply(fromStorage(localStorage.getItem(storageKey)));
  transport = createTransport({
    userId,
    env: {
      locks: navigator.locks, BroadcastChannel: window.BroadcastChannel, EventSource: window.EventSource,
      setTimeout: (fn, ms) => setTimeout(fn, ms), clearTimeout: (id) => clearTimeout(id),
      isHidden: () => document.hidden,
    },
    receive: (incoming, { fromStream }) => apply(incoming, { relay: fromStream }),
    refresh: poll,
    setMode: (mode) => {
      document.documentElement.dataset.jobsTransport = mode;
    },
  });
  transport.start();
  refresh().catch(() => {});
  addEventListener("pagehide", () => transport.closeStream());
  // Back to a page kept in the back/forward cache: its stream was closed and its state may be old.
  addEventListener("pageshow", (event) => {
    if (!event.persisted) return;
    transport.resume();
    refresh().catch(() => {});
  });
  document.addEventListener("visibilitychange", () => transport.visibilityChanged());
  document.documentElement.dataset.jobsReady = "1";
}

/** Forget this user's jobs in this browser (on sign-out). */
export function forget() {
  forgotten = true;
  clearTimeout(persistTimer);
  localStorage.removeItem(storageKey);
}

/** Fetch the list now (200 or 304) and apply it; drop stored active jobs the server no longer knows. */
export async function refresh() {
  const listed = await fetchList(etag);
  if (!listed) return;
  etag = listed.etag;
  version = listed.version ?? version;
  const ids = new Set(listed.jobs.map((job) => job.id));
  apply(listed.jobs);
  for (const job of store.all()) {
    if (isActive(job) && !ids.has(job.id)) checkOne(job.id);
  }
}

/**
 * One round of polling while the stream is down: only the jobs written since the last answer's version (a
 * few hundred bytes from Redis, or a 304), and the whole list every ``FULL_LIST_EVERY``-th round.
 */
async function poll() {
  polls += 1;
  if (version === null || polls % FULL_LIST_EVERY === 0) return refresh();
  const changed = await fetchChanges(version);
  if (!changed) return;
  version = changed.version;
  apply(changed.jobs);
}

export async function cancel(id) {
  const body = await post(`/api/background-jobs/${encodeURIComponent(id)}/cancel`);
  apply([body.job]);
  return body.job;
}

export async function retry(id) {
  const body = await post(`/api/background-jobs/${encodeURIComponent(id)}/retry`);
  apply([body.job]);
  return body.job;
}

/** POST to an operation's start URL; resolves to ``{job, existing}`` (existing: it was already running). */
export async function startAt(url) {
  try {
    const body = await post(url);
    apply([body.job]);
    return { job: body.job, existing: false };
  } catch (error) {
    const job = error.body && error.body.error && error.body.error.job;
    if (error.status === 409 && job) {
      apply([job]);
      return { job, existing: true };
    }
    throw error;
  }
}

/** Tell the server the user was told ``id`` finished; true for exactly one caller across all tabs. */
export async function acknowledge(id) {
  store.markAcknowledged(id);
  schedulePersist();
  const body = await post(`/api/background-jobs/${encodeURIComponent(id)}/acknowledge`);
  return Boolean(body.first);
}

function apply(incoming, { relay = true } = {}) {
  const changed = store.apply(incoming);
  if (!changed.length) return;
  if (relay && transport) transport.relay(changed.map((c) => c.job));
  schedulePersist();
}

async function checkOne(id) {
  try {
    const job = await fetchJob(id);
    if (job) apply([job]);
    else if (store.remove(id)) schedulePersist();
  } catch {
    // Offline or the server is busy: the next refresh tries again.
  }
}

function schedulePersist() {
  if (persistTimer) return;
  persistTimer = setTimeout(persist, 200);
}

function persist() {
  persistTimer = null;
  if (forgotten) return;
  try {
    localStorage.setItem(storageKey, toStorage(store.all(), Date.now()));
  } catch {
    // Storage full or disabled: the page still works, it only cannot paint at once next time.
  }
}
