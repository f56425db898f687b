// toast.js — announces each finished job once per user, wherever they are.
//
// A job that ended (live, or while no tab was open: the list says it is not acknowledged) is announced
// by the tab that wins the server's acknowledgement, so one toast in one tab, never twice, however much
// later. A visible tab asks at once, a hidden one a moment later, so the tab the user looks at wins.
// When the winning tab is hidden, a browser notification is shown too (only if the user allowed it).

import * as jobs from "./jobs.js";
import { fixFor } from "./live-data.js";
import { el, failureText, jobTitle, readyText, resultUrl, sessionOf, viewLabel } from "./ui.js";

const HIDDEN_TAB_DELAY_MS = 1500;
const SUCCESS_TOAST_MS = 20000;
const MAX_AT_ONCE = 3;

let region = null;
const asked = new Set();
let shownCount = 0;
let overflow = 0;
let overflowToast = null;

export function init(toasts) {
  if (!toasts) return;
  region = toasts;
  jobs.subscribe(({ changed }) => {
    for (const { job } of changed) consider(job);
  });
  // Jobs painted from storage or listed before this module subscribed.
  for (const job of jobs.all()) consider(job);
}

function consider(job) {
  if (!job.terminal || job.acknowledged || asked.has(job.id)) return;
  asked.add(job.id);
  if (job.status === "cancelled") return; // the user cancelled it: nothing to announce
  setTimeout(() => announce(job.id), document.hidden ? HIDDEN_TAB_DELAY_MS : 0);
}

async function announce(id) {
  let first;
  try {
    first = await jobs.acknowledge(id);
  } catch {
    asked.delete(id); // try again at the next change or page view
    return;
  }
  const job = jobs.get(id);
  if (!first || !job) return;
  if (shownCount >= MAX_AT_ONCE) {
    showOverflow();
    return;
  }
  shownCount += 1;
  show(job);
  if (document.hidden) notifyBrowser(job);
}

/** A toast for ``job``'s outcome: "EPM program ready", its session, "View program"; or its failure. */
export function show(job) {
  const ok = job.status === "completed";
  const fix = ok ? null : fixFor(job);
  const url = ok ? resultUrl(job) : fix ? fix.href : `/jobs/${encodeURIComponent(job.id)}`;
  const text = ok ? readyText(job) : `${jobTitle(job)} failed: ${failureText(job)}`;
  const session = sessionOf(job);
  const toast = el("div", { class: `toast ${ok ? "toast-success" : "toast-error"}`, role: ok ? "status" : "alert",
    dataset: { jobId: job.id } },
    el("div", { class: "toast-body" },
      el("p", { class: "toast-text" }, text),
      session ? el("p", { class: "toast-context clip", title: session }, session) : null,
      url ? el("a", { class: "toast-link", href: url }, ok ? viewLabel(job) : fix ? fix.label : "See what happened") : null),
    el("button", { type: "button", class: "toast-close", "aria-label": "Close", onclick: () => close(toast) }, "×"));
  region.append(toast);
  if (ok) {
    let timer = setTimeout(() => close(toast), SUCCESS_TOAST_MS);
    // Never take a toast away while the user is on it.
    toast.addEventListener("mouseenter", () => clearTimeout(timer));
    toast.addEventListener("focusin", () => clearTimeout(timer));
    toast.addEventListener("mouseleave", () => {
      timer = setTimeout(() => close(toast), SUCCESS_TOAST_MS / 2);
    });
  }
  return toast;
}

function close(toast) {
  toast.remove();
}

function showOverflow() {
  overflow += 1;
  const text = `${overflow} more job${overflow === 1 ? "" : "s"} finished`;
  if (overflowToast && overflowToast.isConnected) {
    overflowToast.querySelector(".toast-text").textContent = text;
    return;
  }
  overflowToast = el("div", { class: "toast toast-success", role: "status" },
    el("div", { class: "toast-body" }, el("p", { class: "toast-text" }, text),
      el("a", { class: "toast-link", href: "/jobs" }, "See all jobs")),
    el("button", { type: "button", class: "toast-close", "aria-label": "Close",
      onclick: () => close(overflowToast) }, "×"));
  region.append(overflowToast);
}

function notifyBrowser(job) {
  if (!("Notification" in window) || Notification.permission !== "granted") return;
  const ok = job.status === "completed";
  const url = ok ? resultUrl(job) : null;
  const notification = new Notification(ok ? readyText(job) : `${jobTitle(job)} failed`, {
    body: ok ? viewLabel(job) : failureText(job),
    tag: `epm-job-${job.id}`,
  });
  notification.onclick = () => {
    window.focus();
    if (url) location.assign(url);
    notification.close();
  };
}
