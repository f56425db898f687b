// tracker.js — the panel in the live corner listing the user's running jobs, on every page.
//
// Each entry names its job and its session, with the long texts cut to one line (the whole text on
// hover), and its actions on their own row. A job this page already shows (its session card, its row
// on /jobs, its own page) gets a one-line summary. A job that ends here shows its outcome for a few
// seconds, then clears itself (its toast and /jobs keep it). Dismissals are remembered across pages/tabs.

import * as jobs from "./jobs.js";
import { averagePercent, clipped, el, elapsedText, failureText, jobLink, jobTitle, leftText, percent,
  progressBar, readyText, sessionOf, setClipped, showSteps, stepText, updateProgressBar } from "./ui.js";

const NOTE = "You can safely navigate anywhere — we'll tell you when it's ready";
/** How long a finished entry stays before it clears itself (never while pointed at or focused). */
export const CLEAR_AFTER_MS = 6000;

let root = null;
let list = null;
let dismissedKey = null;
let collapsedKey = null;
let dismissed = new Set();
const seenActive = new Set();
const cleared = new Set();
const entries = new Map(); // job id -> {node, key, timer}

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
  setInterval(tick, 1000);
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
    return seenActive.has(job.id) && !dismissed.has(job.id) && !cleared.has(job.id);
  }).reverse(); // oldest first: a new job joins at the end
}

/** Whether the page itself shows ``id`` (outside the tracker), so the tracker only needs a summary. */
function pageShows(id) {
  const selector = `[data-job-id="${CSS.escape(id)}"], [data-live-job="${CSS.escape(id)}"]`;
  return [...document.querySelectorAll(selector)].some((node) => !root.contains(node));
}

function render() {
  const shownJobs = shown();
  const ids = new Set(shownJobs.map((job) => job.id));
  for (const [id, entry] of entries) {
    if (!ids.has(id)) {
      clearTimeout(entry.timer);
      entry.node.remove();
      entries.delete(id);
    }
  }
  if (!shownJobs.length) {
    root.hidden = true;
    return;
  }
  if (!list) {
    root.append(renderHead());
    list = el("div", { class: "tracker-list", tabindex: "0", role: "group", "aria-label": "Jobs" });
    root.append(list);
  }
  for (const job of shownJobs) {
    const compact = jobs.isActive(job) && pageShows(job.id);
    const key = `${job.status}:${compact}`;
    const entry = entries.get(job.id);
    if (entry && entry.key === key) {
      updateJob(entry.node, job);
    } else {
      const node = renderJob(job, { compact });
      if (entry) {
        clearTimeout(entry.timer);
        entry.node.replaceWith(node);
      } else {
        list.append(node);
      }
      entries.set(job.id, { node, key, timer: job.terminal ? scheduleClear(job.id, node) : null });
    }
  }
  updateHead();
  root.hidden = false;
}

function scheduleClear(id, node) {
  let timer = setTimeout(() => clearEntry(id), CLEAR_AFTER_MS);
  const hold = () => clearTimeout(timer);
  const release = () => {
    if (node.matches(":hover") || node.contains(document.activeElement)) return;
    clearTimeout(timer);
    timer = setTimeout(() => clearEntry(id), CLEAR_AFTER_MS / 2);
    const entry = entries.get(id);
    if (entry) entry.timer = timer;
  };
  node.addEventListener("mouseenter", hold);
  node.addEventListener("focusin", hold);
  node.addEventListener("mouseleave", release);
  node.addEventListener("focusout", () => setTimeout(release, 0));
  return timer;
}

function clearEntry(id) {
  cleared.add(id);
  render();
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
    el("p", { class: "tracker-note" }, NOTE),
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
  root.querySelector(".tracker-note").hidden = !running.length;
}

async function askPermission() {
  try {
    await Notification.requestPermission();
  } finally {
    updateHead();
  }
}

/** One job's entry: what and for which session, bar, message, elapsed time; actions on their own row. */
export function renderJob(job, { compact = false } = {}) {
  const title = jobTitle(job);
  const session = sessionOf(job);
  const node = el("article", { class: `tracker-job tracker-${job.status}${compact ? " tracker-compact" : ""}`,
    dataset: { jobId: job.id }, "aria-label": session ? `${title}: ${session}` : title });
  const dismissButton = el("button", { type: "button", class: "tracker-dismiss", "aria-label": "Dismiss",
    title: "Dismiss", onclick: () => dismiss(job.id) }, "×");
  const line = el("div", { class: "tracker-line" }, clipped("strong", "tracker-title", title),
    session ? clipped("span", "tracker-session", session) : null);
  node.append(line);
  if (jobs.isActive(job)) {
    line.append(el("span", { class: "tracker-percent" }, `${percent(job)}%`));
    if (compact) {
      line.append(cancelButton(job), dismissButton);
      return node;
    }
    const link = jobLink(job);
    const timingNode = el("p", { class: "tracker-elapsed" });
    showTiming(timingNode, job);
    const parts = [
      progressBar(job),
      clipped("p", "tracker-message", job.message || "Starting…"),
      timingNode,
      stepsDisclosure(job), // null for a job without declared steps: Element.append would write "null"
      el("div", { class: "tracker-actions" },
        el("a", { class: "tracker-link", href: link.href }, link.label),
        cancelButton(job), dismissButton),
    ];
    node.append(...parts.filter(Boolean));
  } else {
    node.append(outcome(job), el("div", { class: "tracker-actions" }, dismissButton));
  }
  return node;
}

/** "Step 3 of 8 · 0:42 elapsed · about 0:20 left" (whose runs the estimate comes from on hover). */
function timing(job) {
  return [stepText(job), elapsedText(job, { basis: false })].filter(Boolean).join(" · ");
}

function showTiming(node, job) {
  node.textContent = timing(job);
  const basis = leftText(job);
  if (basis) node.title = `Time left: ${basis}`;
  else node.removeAttribute("title");
}

/** The steps with their durations, folded under "Steps" (the entry stays short; opened, it stays open). */
function stepsDisclosure(job) {
  const details = el("details", { class: "tracker-steps" }, el("summary", {}, "Steps"));
  return showSteps(details, job) ? details : null;
}

function updateJob(node, job) {
  const bar = node.querySelector(".progress");
  if (bar) updateProgressBar(bar, job);
  const message = node.querySelector(".tracker-message");
  if (message) setClipped(message, job.message || "Starting…");
  const pct = node.querySelector(".tracker-percent");
  if (pct) pct.textContent = `${percent(job)}%`;
  tickJob(node, job);
  const button = node.querySelector(".tracker-cancel");
  if (button && job.cancel_requested) markCancelling(button);
}

/** Elapsed times move every second between updates: real time, not invented progress. */
function tick() {
  for (const [id, entry] of entries) {
    const job = jobs.get(id);
    if (job && jobs.isActive(job)) tickJob(entry.node, job);
  }
}

function tickJob(node, job) {
  const timingNode = node.querySelector(".tracker-elapsed");
  if (timingNode) showTiming(timingNode, job);
  const details = node.querySelector(".tracker-steps");
  if (details) showSteps(details, job);
}

function cancelButton(job) {
  const button = el("button", { type: "button", class: "button small tracker-cancel" }, "Cancel");
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
  const link = jobLink(job);
  if (job.status === "completed") {
    return el("p", { class: "tracker-outcome tracker-done" }, `${readyText(job)} — `,
      el("a", { href: link.href }, link.label));
  }
  if (job.status === "cancelled") return el("p", { class: "tracker-outcome" }, "Cancelled");
  return clipped("p", "tracker-outcome tracker-failed", `Failed: ${failureText(job)}`);
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
