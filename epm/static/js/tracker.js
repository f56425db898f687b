// tracker.js — the floating panel (bottom-right, every page) listing the user's running jobs.
//
// A job seen running on this page stays listed once it ends, with its outcome and a link, until the
// page changes or the user dismisses it. Dismissals are remembered across pages and tabs.

import * as jobs from "./jobs.js";
import { averagePercent, el, failureText, percent, progressBar, readyText, resultUrl, updateProgressBar, viewLabel }
  from "./ui.js";

const NOTE = "You can safely navigate anywhere — we'll tell you when it's ready";

let root = null;
let dismissedKey = null;
let collapsedKey = null;
let dismissed = new Set();
const seenActive = new Set();
const entries = new Map(); // job id -> {node, status}

export function init(region) {
  if (!region) return;
  root = region;
  dismissedKey = `epm:tracker:dismissed:${jobs.userId}`;
  collapsedKey = `epm:tracker:collapsed:${jobs.userId}`;
  dismissed = loadDismissed();
  addEventListener("storage", (event) => {
    if (event.key === dismissedKey) dismissed = loadDismissed();
    if (event.key === dismissedKey || event.key === collapsedKey) render();
  });
  jobs.subscribe(render);
}

function loadDismissed() {
  try {
    return new Set(JSON.parse(localStorage.getItem(dismissedKey) || "[]"));
  } catch {
    return new Set();
  }
}

function dismiss(id) {
  dismissed.add(id);
  // Only ids still held are worth remembering.
  const known = [...dismissed].filter((jobId) => jobs.get(jobId)).slice(-200);
  localStorage.setItem(dismissedKey, JSON.stringify(known));
  render();
}

function shown() {
  return jobs.all().filter((job) => {
    if (jobs.isActive(job)) seenActive.add(job.id);
    return seenActive.has(job.id) && !dismissed.has(job.id);
  }).reverse(); // oldest first: a new job joins at the bottom, nearest the corner
}

function render() {
  const list = shown();
  const ids = new Set(list.map((job) => job.id));
  for (const [id, entry] of entries) {
    if (!ids.has(id)) {
      entry.node.remove();
      entries.delete(id);
    }
  }
  if (!list.length) {
    root.hidden = true;
    return;
  }
  if (!root.querySelector(".tracker-head")) root.prepend(renderHead());
  for (const job of list) {
    const entry = entries.get(job.id);
    if (entry && entry.status === job.status) {
      updateJob(entry.node, job);
    } else {
      const node = renderJob(job);
      if (entry) entry.node.replaceWith(node);
      else root.append(node);
      entries.set(job.id, { node, status: job.status });
    }
  }
  updateHead();
  root.hidden = false;
}

function renderHead() {
  const count = el("span", { class: "tracker-count" });
  const toggle = el("button", { type: "button", class: "tracker-toggle", "aria-controls": root.id,
    onclick: () => {
      localStorage.setItem(collapsedKey, isCollapsed() ? "0" : "1");
      render();
    } });
  return el("header", { class: "tracker-head" },
    el("h2", { class: "tracker-heading" }, "Background jobs ", count), toggle,
    el("button", { type: "button", class: "link-button notify-enable", hidden: true, onclick: askPermission },
      "Notify me when it's ready"));
}

function isCollapsed() {
  return localStorage.getItem(collapsedKey) === "1";
}

/** The header: how many run, and (collapsed to one line, remembered across pages) their average progress. */
function updateHead() {
  const button = root.querySelector(".notify-enable");
  const running = jobs.active();
  button.hidden = !("Notification" in window) || Notification.permission !== "default" || !running.length;
  const collapsed = isCollapsed();
  root.classList.toggle("collapsed", collapsed);
  const toggle = root.querySelector(".tracker-toggle");
  toggle.textContent = collapsed ? "Show" : "Hide";
  toggle.setAttribute("aria-expanded", String(!collapsed));
  toggle.setAttribute("aria-label", collapsed ? "Show background jobs" : "Hide background jobs");
  let count = running.length ? `(${running.length} running)` : "";
  if (collapsed && running.length) {
    count = `(${running.length} running · ${averagePercent(running)}%)`;
  }
  root.querySelector(".tracker-count").textContent = count;
}

async function askPermission() {
  try {
    await Notification.requestPermission();
  } finally {
    updateHead();
  }
}

/** One job's entry: title, bar, message, percentage, note, link, Cancel, dismiss. */
export function renderJob(job) {
  const node = el("article", { class: `tracker-job tracker-${job.status}`, dataset: { jobId: job.id },
    "aria-label": job.title || job.job_type });
  const head = el("div", { class: "tracker-row" },
    el("strong", { class: "tracker-title" }, job.title || job.job_type),
    el("button", { type: "button", class: "tracker-dismiss", "aria-label": "Dismiss", title: "Dismiss",
      onclick: () => dismiss(job.id) }, "×"));
  node.append(head);
  if (jobs.isActive(job)) {
    node.append(
      progressBar(job),
      el("div", { class: "tracker-row" },
        el("span", { class: "tracker-message" }, job.message || "Starting…"),
        el("span", { class: "tracker-percent" }, `${percent(job)}%`)),
      el("p", { class: "tracker-note" }, NOTE),
      el("div", { class: "tracker-actions" },
        el("a", { class: "tracker-link", href: "/programs" }, "Programs"),
        cancelButton(job)));
  } else {
    node.append(outcome(job));
  }
  return node;
}

function updateJob(node, job) {
  const bar = node.querySelector(".progress");
  if (bar) updateProgressBar(bar, job);
  const message = node.querySelector(".tracker-message");
  if (message) message.textContent = job.message || "Starting…";
  const pct = node.querySelector(".tracker-percent");
  if (pct) pct.textContent = `${percent(job)}%`;
  const button = node.querySelector(".tracker-cancel");
  if (button && job.cancel_requested) markCancelling(button);
}

function cancelButton(job) {
  const button = el("button", { type: "button", class: "button tracker-cancel" }, "Cancel");
  if (job.cancel_requested) markCancelling(button);
  button.addEventListener("click", async () => {
    markCancelling(button);
    try {
      await jobs.cancel(job.id);
    } catch (error) {
      button.disabled = false;
      button.textContent = "Cancel";
      showError(button.closest(".tracker-job"), error.message);
    }
  });
  return button;
}

function markCancelling(button) {
  button.disabled = true;
  button.textContent = "Cancelling…";
}

function outcome(job) {
  const url = resultUrl(job);
  if (job.status === "completed") {
    return el("p", { class: "tracker-outcome tracker-done" }, `${readyText(job)} — `,
      url ? el("a", { href: url }, viewLabel(job)) : "done");
  }
  if (job.status === "cancelled") return el("p", { class: "tracker-outcome" }, "Cancelled");
  return el("p", { class: "tracker-outcome tracker-failed" }, `Failed: ${failureText(job)}`);
}

function showError(node, message) {
  if (!node) return;
  let error = node.querySelector(".tracker-error");
  if (!error) {
    error = el("p", { class: "tracker-error", role: "alert" });
    node.append(error);
  }
  error.textContent = message;
}
