// progress.js — a session page's operations: start buttons, progress bars that come back, outcomes.
//
// Each `section.operation[data-operation][data-session-id]` shows the newest job of its operation for
// its session: while one is active (started in any tab) the start button is disabled and reads
// "EPM generation in progress…", and the bar follows it; when it ends, "Completed — View program" or
// "Failed: <reason>" with the action that fits (Retry, or "Edit sources" when a retry would fail the same
// way). A start that cannot succeed (``data-blocked``) stays disabled, its reason beside it. One result
// link per card: the card's "latest result" line. The server renders the same states, so the page works
// without JS.

import * as jobs from "./jobs.js";
import { el, elapsedText, failureText, progressBar, resultUrl, runningText, showSteps, updateProgressBar,
  viewLabel } from "./ui.js";
import { fixFor } from "./live-data.js";
import { timeElement } from "./time.js";

const RECENT_OUTCOME_MS = 10 * 60 * 1000;

export function init(sections) {
  const panels = [...sections].map(setUp);
  if (!panels.length) return;
  const capNote = document.querySelector("[data-cap-reason]");
  jobs.subscribe(() => {
    const atCap = accountAtCap(capNote);
    panels.forEach((panel) => render(panel, atCap));
  });
  // Between two reports the elapsed time moves: real time, not invented progress.
  setInterval(() => panels.forEach(tickElapsed), 1000);
}

function setUp(section) {
  const panel = {
    section,
    operation: section.dataset.operation,
    sessionId: section.dataset.sessionId,
    runningLabel: section.dataset.runningLabel,
    button: section.querySelector("button[data-start]"),
    area: section.querySelector("[data-job-progress]"),
    latest: section.querySelector("[data-latest-result]"),
    watched: new Set(),
    shownKey: null,
  };
  const rendered = panel.area.dataset.jobId;
  if (rendered) panel.watched.add(rendered);
  panel.idleLabel = panel.button.dataset.idleLabel || panel.button.textContent.trim();
  const form = panel.button.closest("form");
  form.addEventListener("submit", (event) => {
    event.preventDefault();
    start(panel);
  });
  panel.area.addEventListener("submit", (event) => {
    const button = event.target.querySelector("[data-retry-job]");
    if (!button) return;
    event.preventDefault();
    retry(panel, button.dataset.retryJob, button);
  });
  return panel;
}

function jobsOf(panel) {
  return jobs.all().filter((job) => job.job_type === panel.operation && String(job.session_id) === panel.sessionId);
}

// The account may run `data-max-running` jobs at once (EPM_MAX_RUNNING_PER_USER): at that many, every
// start button waits, the note says why, and a start would only be refused with 429.
function accountAtCap(capNote) {
  if (!capNote) return false;
  const atCap = jobs.all().filter(jobs.isActive).length >= Number(capNote.dataset.maxRunning);
  capNote.hidden = !atCap;
  return atCap;
}

function render(panel, atCap = false) {
  const mine = jobsOf(panel);
  const running = mine.find(jobs.isActive);
  if (running) {
    panel.watched.add(running.id);
    panel.button.disabled = true;
    panel.button.textContent = panel.runningLabel;
    showRunning(panel, running);
    return;
  }
  if (!panel.button.dataset.busy) {
    panel.button.disabled = Boolean(panel.button.dataset.blocked) || atCap;
    panel.button.textContent = panel.idleLabel;
    if (!panel.button.dataset.blocked) {
      if (atCap) panel.button.setAttribute("aria-describedby", "cap-reason");
      else panel.button.removeAttribute("aria-describedby");
    }
  }
  const newest = mine[0];
  if (newest && (panel.watched.has(newest.id) || endedRecently(newest))) showOutcome(panel, newest);
}

function endedRecently(job) {
  const ended = Date.parse(job.completed_at || "");
  return Number.isFinite(ended) && Date.now() - ended < RECENT_OUTCOME_MS;
}

function showRunning(panel, job) {
  const key = `${job.id}:running`;
  if (panel.shownKey !== key) {
    panel.area.replaceChildren(progressBar(job), el("p", { class: "progress-text" }),
      el("p", { class: "progress-elapsed" }));
    panel.area.dataset.jobId = job.id;
    panel.shownKey = key;
  }
  updateProgressBar(panel.area.querySelector(".progress"), job);
  panel.area.querySelector(".progress-text").textContent = runningText(job);
  tickElapsed(panel);
}

/** The elapsed time, the time left and the current step's time so far move with the clock. */
function tickElapsed(panel) {
  const node = panel.area.querySelector(".progress-elapsed");
  const job = node && jobs.get(panel.area.dataset.jobId);
  if (!job || !jobs.isActive(job)) return;
  node.textContent = elapsedText(job);
  showSteps(panel.area, job);
}

function showOutcome(panel, job) {
  const key = `${job.id}:${job.status}`;
  if (panel.shownKey === key) return;
  panel.shownKey = key;
  panel.area.dataset.jobId = job.id;
  const url = resultUrl(job);
  if (job.status === "completed") {
    panel.area.replaceChildren(el("p", { class: "job-done" }, "Completed"));
    if (url && panel.latest) {
      panel.latest.replaceChildren(el("a", { href: url }, viewLabel(job)), " ",
        el("span", { class: "muted" }, timeElement(job.completed_at)));
    }
    return;
  }
  const text = job.status === "cancelled"
    ? el("p", { class: "job-cancelled" }, "Cancelled")
    : el("p", { class: "job-failed" }, `Failed: ${failureText(job)}`);
  const fix = job.status === "failed" ? fixFor(job) : null;
  const actions = el("div", { class: "job-fix" },
    fix ? el("a", { class: "button job-edit", href: fix.href }, fix.label) : null);
  if (!fix || fix.retry) {
    const button = el("button", { type: "button", class: "button job-retry" }, "Retry");
    button.addEventListener("click", () => retry(panel, job.id, button));
    actions.append(button);
  }
  panel.area.replaceChildren(text, actions);
}

async function start(panel) {
  const { button } = panel;
  button.disabled = true;
  button.dataset.busy = "1";
  button.textContent = panel.runningLabel;
  clearError(panel);
  try {
    const { job } = await jobs.startAt(`/api/sessions/${encodeURIComponent(panel.sessionId)}/${panel.operation}`);
    panel.watched.add(job.id);
    render(panel);
  } catch (error) {
    showError(panel, error.message);
  } finally {
    delete button.dataset.busy;
    render(panel);
  }
}

async function retry(panel, jobId, button) {
  button.disabled = true;
  clearError(panel);
  try {
    const job = await jobs.retry(jobId);
    panel.watched.add(job.id);
    render(panel);
  } catch (error) {
    button.disabled = false;
    showError(panel, error.message);
  }
}

function showError(panel, message) {
  clearError(panel);
  panel.area.after(el("p", { class: "job-error", role: "alert" }, message));
}

function clearError(panel) {
  panel.section.querySelectorAll(".job-error").forEach((node) => node.remove());
}
