// dashboard.js — keeps /jobs live: new jobs appear under Running, ended ones move to Finished, and
// Cancel/Retry act without a page load. Also keeps one job's page (/jobs/<id>) live.
// The server renders the same rows (templates/jobs/_macros.html), so the page works without JS.

import * as jobs from "./jobs.js";
import { duration, el, elapsedSeconds, failureText, jobTitle, leftText, percent, progressBar, resultUrl, sessionOf,
  showSteps, updateProgressBar, viewLabel } from "./ui.js";
import { timeElement } from "./time.js";
import { fixFor } from "./live-data.js";

export function init(root, liveJob) {
  if (root) initDashboard(root);
  if (liveJob) initJobPage(liveJob);
}

function initDashboard(root) {
  const filter = { status: root.dataset.filterStatus, type: root.dataset.filterType };
  const context = { csrf: root.dataset.csrf, next: root.dataset.next };
  const bodies = {
    running: root.querySelector('[data-jobs-table="running"] tbody'),
    finished: root.querySelector('[data-jobs-table="finished"] tbody'),
  };
  root.addEventListener("submit", (event) => act(event));
  jobs.subscribe(({ changed, removed }) => {
    for (const { job } of changed) place(job);
    for (const id of removed) rowOf(id)?.remove();
    showEmptyStates();
  });

  function rowOf(id) {
    return root.querySelector(`tr[data-job-id="${CSS.escape(id)}"]`);
  }

  function place(job) {
    const row = rowOf(job.id);
    // The server's render is newer than a state restored from storage.
    if (row && Number(row.dataset.seq || 0) >= (job.seq || 0)) return;
    const matches = (!filter.status || filter.status === job.status) && (!filter.type || filter.type === job.job_type);
    if (!matches) {
      row?.remove();
      return;
    }
    const body = jobs.isActive(job) ? bodies.running : bodies.finished;
    if (row && row.parentElement === body && row.dataset.status === job.status) {
      updateRow(row, job);
      return;
    }
    const fresh = renderRow(job, context);
    if (row) row.remove();
    body.prepend(fresh);
  }

  function showEmptyStates() {
    const running = bodies.running.rows.length;
    for (const body of Object.values(bodies)) body.closest("table").hidden = body.rows.length === 0;
    root.querySelector(".empty-running").hidden = running > 0;
    const section = root.querySelector("[data-running-section]");
    if (running) section.hidden = false;
    root.querySelector(".empty-finished").hidden = bodies.finished.rows.length > 0 || !running;
    const empty = root.querySelector("p.empty");
    if (empty && (running || bodies.finished.rows.length)) empty.remove();
  }
}

/** One dashboard row, the same cells as the server's. */
export function renderRow(job, { csrf, next }) {
  const url = resultUrl(job);
  const title = job.status === "completed" && url
    ? el("a", { href: url }, jobTitle(job))
    : el("a", { href: `/jobs/${encodeURIComponent(job.id)}` }, jobTitle(job));
  const row = el("tr", { dataset: { jobId: job.id, jobType: job.job_type, status: job.status, seq: job.seq || 0 } },
    el("td", { class: "job-title" }, title, job.retry_of ? el("span", { class: "muted" }, " (retry)") : null,
      sessionOf(job) ? el("span", { class: "job-session" }, sessionOf(job)) : null),
    el("td", { class: "job-status", dataset: { status: job.status, label: "Status" } },
      el("span", { class: `status status-${job.status}` }, job.status),
      jobs.isActive(job) ? el("span", { class: "job-percent" }, ` ${percent(job)}%`) : null),
    el("td", { class: "job-detail", dataset: { label: "Details" } }, detail(job)),
    el("td", { class: "job-when", dataset: { label: "When" } }, timeElement(job.completed_at || job.created_at)),
    el("td", { class: "job-actions" }, actions(job, csrf, next)));
  return row;
}

function updateRow(row, job) {
  row.dataset.seq = job.seq || 0;
  const pct = row.querySelector(".job-percent");
  if (pct) pct.textContent = ` ${percent(job)}%`;
  row.querySelector(".job-detail").textContent = detail(job);
  const button = row.querySelector(".job-actions button");
  if (button && job.cancel_requested) {
    button.disabled = true;
    button.textContent = "Cancelling…";
  }
}

function detail(job) {
  if (job.status === "failed") return failureText(job);
  if (job.status === "completed") return (job.result && job.result.summary) || job.message || "";
  return job.message || "";
}

function actions(job, csrf, next) {
  const form = (verb, label) => el("form", { method: "post", action: `/jobs/${encodeURIComponent(job.id)}/${verb}`,
    class: "inline-form" },
  el("input", { type: "hidden", name: "csrf_token", value: csrf }),
  el("input", { type: "hidden", name: "next", value: next }),
  el("button", { type: "submit", class: "button small", disabled: verb === "cancel" && job.cancel_requested },
    verb === "cancel" && job.cancel_requested ? "Cancelling…" : label));
  if (jobs.isActive(job)) return form("cancel", "Cancel");
  const fix = job.status === "failed" ? fixFor(job) : null;
  if (fix) {
    return [el("a", { class: "button small job-edit", href: fix.href }, fix.label), fix.retry ? form("retry", "Retry") : null];
  }
  if (job.status === "failed" || job.status === "cancelled") return form("retry", "Retry");
  const url = resultUrl(job);
  return url ? el("a", { href: url }, viewLabel(job)) : null;
}

/** Cancel and Retry through the API (the forms still work without JS). */
async function act(event) {
  const form = event.target;
  const match = /^\/jobs\/([^/]+)\/(cancel|retry)$/.exec(new URL(form.action, location.href).pathname);
  if (!match) return;
  event.preventDefault();
  const [, id, verb] = match;
  const button = form.querySelector("button");
  button.disabled = true;
  const label = button.textContent;
  button.textContent = verb === "cancel" ? "Cancelling…" : "Starting…";
  try {
    if (verb === "cancel") await jobs.cancel(decodeURIComponent(id));
    else await jobs.retry(decodeURIComponent(id));
  } catch (error) {
    button.disabled = false;
    button.textContent = label;
    form.after(el("p", { class: "job-error", role: "alert" }, error.message));
  }
}

function initJobPage(section) {
  const id = section.dataset.liveJob;
  const took = section.querySelector("[data-job-duration]");
  const left = section.querySelector("[data-job-left]");
  // The job as held, unless the server's render is newer (an older state restored from storage).
  const held = () => {
    const job = jobs.get(id);
    return job && (job.seq || 0) >= Number(section.dataset.seq || 0) ? job : null;
  };
  // Between two updates the clock moves: the time taken, the time left, the current step's time so far.
  const tick = () => {
    const job = held();
    if (!job || !jobs.isActive(job)) return;
    const seconds = elapsedSeconds(job);
    if (took && seconds !== null) took.textContent = `${duration(seconds)} so far`;
    if (left) {
      const text = leftText(job);
      left.hidden = !text;
      left.querySelector("dd").textContent = text;
    }
    const list = section.querySelector("ol.steps");
    if (list) showSteps(list.parentElement, job);
  };
  setInterval(tick, 1000);
  jobs.subscribe(() => {
    const job = held();
    if (!job || (job.seq || 0) === Number(section.dataset.seq || 0)) return;
    section.dataset.seq = job.seq;
    const shown = section.querySelector("[data-status]");
    if (shown.dataset.status === job.status) {
      const bar = section.querySelector(".progress");
      if (bar) updateProgressBar(bar, job);
      tick();
      return;
    }
    if (jobs.isActive(job)) {
      if (!section.querySelector(".progress")) section.querySelector(".job-state").after(progressBar(job));
      tick();
      return;
    }
    // It ended: the server renders the outcome (result, error, retry) and the step log best.
    location.reload();
  });
}
