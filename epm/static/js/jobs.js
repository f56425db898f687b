// jobs.js — the one owner of job state on a page, and the only module that talks to /api/background-jobs.
//
// It paints from localStorage at once, then keeps the state live. One tab per browser leads (Web Locks):
// it holds the one EventSource for the user's stream and relays what it learns to the other tabs over
// BroadcastChannel — over HTTP/1.1 a browser allows six connections per host across all its tabs, so a
// stream per tab would hang the seventh. When the stream fails the leader polls the list with
// If-None-Match (every 3 s, 10 s while hidden) and tries the stream again with a growing delay.
// Events are ordered by seq alone: an update whose seq is not newer than the one held is dropped.

const ACTIVE = new Set(["pending", "running"]);
const LIST_URL = "/api/background-jobs?limit=50";
const EVENTS_URL = "/api/background-jobs/events";
const POLL_VISIBLE_MS = 3000;
const POLL_HIDDEN_MS = 10000;
const RETRY_MAX_MS = 30000;
const KEEP_FINISHED_MS = 24 * 3600 * 1000;
const MAX_STORED = 100;

/** The signed-in user (null on a page without one): jobs and widget settings are kept per user. */
export const userId = metaContent("epm-user");
const storageKey = `epm:jobs:${userId}`;
const jobs = new Map();
const listeners = new Set();
let channel = null;
let stream = null;
let streamFailures = 0;
let reconnectTimer = null;
let pollTimer = null;
let polling = false;
let etag = null;
let persistTimer = null;
let forgotten = false;
let leading = false;

export class ApiError extends Error {
  constructor(status, code, message, body) {
    super(message);
    this.status = status;
    this.code = code;
    this.body = body;
  }
}

export function isActive(job) {
  return ACTIVE.has(job.status);
}

/** Every job held, newest first. */
export function all() {
  return [...jobs.values()].sort((a, b) => (b.created_at || "").localeCompare(a.created_at || ""));
}

export function active() {
  return all().filter(isActive);
}

export function get(id) {
  return jobs.get(id);
}

/** Call ``listener({changed, removed})`` now with nothing changed, and after every change. */
export function subscribe(listener) {
  listeners.add(listener);
  listener({ changed: [], removed: [] });
  return () => listeners.delete(listener);
}

/** Paint from localStorage, then go live (leader or follower). Call once per page, after widgets subscribed. */
export function start() {
  if (!userId) return;
  restore();
  if (navigator.locks && "BroadcastChannel" in window) {
    channel = new BroadcastChannel(`epm-jobs:${userId}`);
    channel.onmessage = (event) => {
      if (event.data && event.data.type === "jobs") apply(event.data.jobs, { relay: false });
    };
    setTransport("follower");
    // Held for the life of the tab; when the leader's tab closes, the next waiting tab gets it.
    navigator.locks.request(`epm-jobs-leader:${userId}`, () => {
      lead();
      return new Promise(() => {});
    });
  } else {
    lead();
  }
  refresh().catch(() => {});
  addEventListener("pagehide", () => closeStream());
  // Back to a page kept in the back/forward cache: its stream was closed and its state may be old.
  addEventListener("pageshow", (event) => {
    if (!event.persisted) return;
    if (leading) openStream();
    refresh().catch(() => {});
  });
  document.addEventListener("visibilitychange", () => {
    if (polling) schedulePoll();
  });
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
  const headers = { Accept: "application/json" };
  if (etag) headers["If-None-Match"] = etag;
  const response = await fetch(LIST_URL, { headers, credentials: "same-origin", cache: "no-store" });
  if (response.status === 304) return;
  const body = await readJson(response);
  etag = response.headers.get("ETag");
  const listed = new Set(body.jobs.map((job) => job.id));
  apply(body.jobs);
  for (const job of [...jobs.values()]) {
    if (isActive(job) && !listed.has(job.id)) checkOne(job.id);
  }
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
  const job = jobs.get(id);
  if (job) job.acknowledged = true;
  schedulePersist();
  const body = await post(`/api/background-jobs/${encodeURIComponent(id)}/acknowledge`);
  return Boolean(body.first);
}

// -- state ------------------------------------------------------------------------------------------
function apply(incoming, { relay = true } = {}) {
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
  if (!changed.length) return;
  if (relay && channel) channel.postMessage({ type: "jobs", jobs: changed.map((c) => c.job) });
  schedulePersist();
  notify({ changed, removed: [] });
}

function remove(id) {
  if (!jobs.delete(id)) return;
  schedulePersist();
  notify({ changed: [], removed: [id] });
}

function notify(change) {
  for (const listener of listeners) {
    try {
      listener(change);
    } catch (error) {
      console.error("epm: a job widget failed", error);
    }
  }
}

async function checkOne(id) {
  try {
    const response = await fetch(`/api/background-jobs/${encodeURIComponent(id)}`, {
      headers: { Accept: "application/json" }, credentials: "same-origin", cache: "no-store",
    });
    if (response.status === 404) {
      remove(id);
      return;
    }
    apply([(await readJson(response)).job]);
  } catch {
    // Offline or the server is busy: the next refresh tries again.
  }
}

// -- localStorage -----------------------------------------------------------------------------------
function restore() {
  let saved;
  try {
    saved = JSON.parse(localStorage.getItem(storageKey) || "null");
  } catch {
    saved = null;
  }
  if (!saved || !Array.isArray(saved.jobs)) return;
  apply(saved.jobs, { relay: false });
}

function schedulePersist() {
  if (persistTimer) return;
  persistTimer = setTimeout(persist, 200);
}

function persist() {
  persistTimer = null;
  if (forgotten) return;
  const now = Date.now();
  const kept = all().filter((job) => {
    if (isActive(job)) return true;
    const ended = Date.parse(job.completed_at || job.updated_at || job.created_at || "");
    return Number.isFinite(ended) && now - ended < KEEP_FINISHED_MS;
  }).slice(0, MAX_STORED);
  try {
    localStorage.setItem(storageKey, JSON.stringify({ saved_at: new Date(now).toISOString(), jobs: kept }));
  } catch {
    // Storage full or disabled: the page still works, it only cannot paint at once next time.
  }
}

// -- transport --------------------------------------------------------------------------------------
function lead() {
  leading = true;
  openStream();
}

function openStream() {
  clearTimeout(reconnectTimer);
  closeStream();
  const source = new EventSource(EVENTS_URL);
  stream = source;
  source.addEventListener("job", (event) => {
    try {
      apply([JSON.parse(event.data)]);
    } catch (error) {
      console.error("epm: an event could not be read", error);
    }
  });
  source.onopen = () => {
    streamFailures = 0;
    stopPolling();
    setTransport("leader");
  };
  source.onerror = () => {
    if (stream !== source) return;
    closeStream();
    streamFailures += 1;
    setTransport("polling");
    startPolling();
    const delay = Math.min(RETRY_MAX_MS, 1000 * 2 ** Math.min(streamFailures - 1, 5));
    reconnectTimer = setTimeout(openStream, delay);
  };
}

function closeStream() {
  if (stream) {
    stream.onerror = null;
    stream.close();
    stream = null;
  }
}

function startPolling() {
  if (polling) return;
  polling = true;
  refresh().catch(() => {});
  schedulePoll();
}

function stopPolling() {
  polling = false;
  clearTimeout(pollTimer);
}

function schedulePoll() {
  clearTimeout(pollTimer);
  pollTimer = setTimeout(async () => {
    try {
      await refresh();
    } catch {
      // The next round tries again.
    }
    if (polling) schedulePoll();
  }, document.hidden ? POLL_HIDDEN_MS : POLL_VISIBLE_MS);
}

function setTransport(mode) {
  document.documentElement.dataset.jobsTransport = mode;
}

// -- HTTP -------------------------------------------------------------------------------------------
function metaContent(name) {
  const meta = document.querySelector(`meta[name="${name}"]`);
  return meta ? meta.content : null;
}

/** POST with the page's CSRF token; resolves to the JSON body or throws ApiError with the server's message. */
export async function post(url, payload) {
  const headers = { Accept: "application/json", "X-CSRFToken": metaContent("csrf-token") || "" };
  const init = { method: "POST", headers, credentials: "same-origin" };
  if (payload !== undefined) {
    headers["Content-Type"] = "application/json";
    init.body = JSON.stringify(payload);
  }
  let response;
  try {
    response = await fetch(url, init);
  } catch {
    throw new ApiError(0, "network", "The server could not be reached. Check your connection and try again.");
  }
  return readJson(response);
}

async function readJson(response) {
  let body = null;
  try {
    body = await response.json();
  } catch {
    body = null;
  }
  if (!response.ok) {
    const error = (body && body.error) || {};
    throw new ApiError(response.status, error.code || "http_" + response.status,
      error.message || `The server answered ${response.status}. Try again in a moment.`, body);
  }
  return body;
}
