// transport.js — how a page hears about its jobs: one tab per browser leads (Web Locks) and holds the one
// EventSource of the user's stream, relaying what it learns to the other tabs over BroadcastChannel (over
// HTTP/1.1 a browser allows six connections per host across all its tabs, so a stream per tab would hang
// the seventh). When the stream fails the leader polls for what changed since the last answer (``refresh``:
// jobs.js asks ``?since=V``; every 3 s, 10 s while hidden) and tries the stream again with a growing delay.
// When the leading tab closes, the next tab waiting for the lock takes over.
//
// The browser's parts come in through ``env`` so the hand-over and backoff logic is unit-tested in Node.

export const EVENTS_URL = "/api/background-jobs/events";
export const POLL_VISIBLE_MS = 3000;
export const POLL_HIDDEN_MS = 10000;
export const RETRY_MAX_MS = 30000;

/** Milliseconds before the ``failures``-th reconnection: 1, 2, 4 ... 30 s. */
export function reconnectDelay(failures) {
  return Math.min(RETRY_MAX_MS, 1000 * 2 ** Math.min(Math.max(failures, 1) - 1, 5));
}

/**
 * ``receive(jobs, {fromStream})`` takes what arrives (from the stream: the caller relays what was new);
 * ``refresh()`` polls the list once; ``setMode("follower" | "leader" | "polling")`` reports the state.
 * ``env``: ``{locks, BroadcastChannel, EventSource, setTimeout, clearTimeout, isHidden}``.
 */
export function createTransport({ userId, env, receive, refresh, setMode }) {
  let channel = null;
  let stream = null;
  let failures = 0;
  let reconnectTimer = null;
  let pollTimer = null;
  let polling = false;
  let leading = false;

  function start() {
    if (env.locks && env.BroadcastChannel) {
      channel = new env.BroadcastChannel(`epm-jobs:${userId}`);
      channel.onmessage = (event) => {
        if (event.data && event.data.type === "jobs") receive(event.data.jobs, { fromStream: false });
      };
      setMode("follower");
      // Held for the life of the tab; when the leader's tab closes, the next waiting tab gets it.
      env.locks.request(`epm-jobs-leader:${userId}`, () => {
        lead();
        return new Promise(() => {});
      });
    } else {
      lead();
    }
  }

  function lead() {
    leading = true;
    openStream();
  }

  function openStream() {
    env.clearTimeout(reconnectTimer);
    closeStream();
    const source = new env.EventSource(EVENTS_URL);
    stream = source;
    source.addEventListener("job", (event) => {
      let job;
      try {
        job = JSON.parse(event.data);
      } catch (error) {
        console.error("epm: an event could not be read", error);
        return;
      }
      receive([job], { fromStream: true });
    });
    source.onopen = () => {
      failures = 0;
      stopPolling();
      setMode("leader");
    };
    source.onerror = () => {
      if (stream !== source) return;
      closeStream();
      failures += 1;
      setMode("polling");
      startPolling();
      reconnectTimer = env.setTimeout(openStream, reconnectDelay(failures));
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
    env.clearTimeout(pollTimer);
  }

  function schedulePoll() {
    env.clearTimeout(pollTimer);
    pollTimer = env.setTimeout(async () => {
      try {
        await refresh();
      } catch {
        // The next round tries again.
      }
      if (polling) schedulePoll();
    }, env.isHidden() ? POLL_HIDDEN_MS : POLL_VISIBLE_MS);
  }

  return {
    start,
    /** Tell the other tabs (the leader relays what its stream brought). */
    relay(jobs) {
      if (channel && jobs.length) channel.postMessage({ type: "jobs", jobs });
    },
    /** Back from the back/forward cache: its stream was closed. */
    resume() {
      if (leading) openStream();
    },
    closeStream,
    visibilityChanged() {
      if (polling) schedulePoll();
    },
    get leading() {
      return leading;
    },
  };
}
