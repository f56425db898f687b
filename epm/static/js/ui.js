// ui.js — small pure functions that build elements from a job. Text goes in with textContent, never innerHTML.

import { operationInfo, sessionName } from "./live-data.js";
import { stepStates, stepSummary, stepTime } from "./steps.js";
import { basisText, timeLeft } from "./estimate.js";

/** ``el("p", {class: "x"}, "text", child)``: an element with attributes and children (strings become text). */
export function el(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [name, value] of Object.entries(attrs)) {
    if (value === null || value === undefined || value === false) continue;
    if (name === "class") node.className = value;
    else if (name === "dataset") Object.assign(node.dataset, value);
    else if (name.startsWith("on")) node.addEventListener(name.slice(2), value);
    else node.setAttribute(name, value === true ? "" : String(value));
  }
  for (const child of children.flat()) {
    if (child === null || child === undefined || child === false) continue;
    node.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
  return node;
}

/** A one-line text that ellipsises when too long, the whole text in its title (hover) attribute. */
export function clipped(tag, className, text) {
  return el(tag, { class: `clip ${className}`, title: text || null }, text || "");
}

export function setClipped(node, text) {
  node.textContent = text || "";
  if (text) node.title = text;
  else node.removeAttribute("title");
}

export function percent(job) {
  const value = Number(job.progress) || 0;
  return Math.max(0, Math.min(100, Math.round(value)));
}

/** The mean progress of ``jobs``, rounded (0 for none). */
export function averagePercent(jobs) {
  return jobs.length ? Math.round(jobs.reduce((sum, job) => sum + percent(job), 0) / jobs.length) : 0;
}

/** A progress bar for ``job``, labelled for screen readers. */
export function progressBar(job, label) {
  const bar = el("div", { class: "progress", role: "progressbar", "aria-valuemin": 0, "aria-valuemax": 100,
    "aria-label": label || `${jobTitle(job)} progress` }, el("div", { class: "progress-fill" }));
  updateProgressBar(bar, job);
  return bar;
}

export function updateProgressBar(bar, job) {
  const value = percent(job);
  bar.setAttribute("aria-valuenow", String(value));
  bar.firstElementChild.style.width = `${value}%`;
  // The activity indicator: the job is alive between two reports (a moving sheen, never a made-up percentage).
  bar.classList.toggle("progress-active", job.status === "running");
}

/** "about 0:20 left" or "longer than usual" for an active job the server has an estimate for; "" otherwise. */
export function leftGuess(job, now = Date.now()) {
  const left = timeLeft(job, now);
  if (left === null) return "";
  return Math.round(left) > 0 ? `about ${duration(left)} left` : "longer than usual";
}

/** The guess with its basis: "about 0:20 left (based on your last 5 runs)", or "". */
export function leftText(job, now = Date.now()) {
  const guess = leftGuess(job, now);
  return guess && `${guess} (based on ${basisText(job.estimate)})`;
}

/** "0:42 elapsed · about 0:20 left (based on your last 5 runs)" for a running job (``basis: false``: without
 * the parenthesis). Real time and the server's estimate: nothing invented between two updates. */
export function elapsedText(job, { basis = true, now = Date.now() } = {}) {
  const seconds = elapsedSeconds(job, now);
  if (seconds === null || job.status === "pending") return "";
  const left = basis ? leftText(job, now) : leftGuess(job, now);
  return [`${duration(seconds)} elapsed`, left].filter(Boolean).join(" · ");
}

export function jobTitle(job) {
  return operationInfo(job).title;
}

/** The session the job belongs to, by name, or null. */
export function sessionOf(job) {
  return sessionName(job.session_id);
}

/** Where the job's result is shown (an operation's ``result.url``), or null. */
export function resultUrl(job) {
  const url = job.result && job.result.url;
  return typeof url === "string" && url.startsWith("/") ? url : null;
}

export function viewLabel(job) {
  return (job.result && job.result.view_label) || operationInfo(job).viewLabel;
}

export function readyText(job) {
  return (job.result && job.result.ready) || operationInfo(job).ready;
}

export function failureText(job) {
  return job.error || "It stopped with an error.";
}

/** The one link a job offers: its result when it has one, else its own page. */
export function jobLink(job) {
  const url = job.status === "completed" ? resultUrl(job) : null;
  if (url) return { href: url, label: viewLabel(job) };
  return { href: `/jobs/${encodeURIComponent(job.id)}`, label: "Details" };
}

/** "Still running (45%) — Scheduling tasks" */
export function runningText(job) {
  const message = job.message ? ` — ${job.message}` : "";
  return `${job.status === "pending" ? "Starting" : "Still running"} (${percent(job)}%)${message}`;
}

/** "0:42", "12:05", "1:02:07" */
export function duration(seconds) {
  const total = Math.max(0, Math.round(seconds));
  const h = Math.floor(total / 3600);
  const m = Math.floor((total % 3600) / 60);
  const s = String(total % 60).padStart(2, "0");
  return h ? `${h}:${String(m).padStart(2, "0")}:${s}` : `${m}:${s}`;
}

/** Seconds since the job started (or was created), by this browser's clock; null before it has a time. */
export function elapsedSeconds(job, now = Date.now()) {
  const since = Date.parse(job.started_at || job.created_at || "");
  if (!Number.isFinite(since)) return null;
  const until = job.completed_at ? Date.parse(job.completed_at) : now;
  return Math.max(0, (until - since) / 1000);
}

/** The job's steps as a list, like a CI run page: done (a tick, its duration), current (a turning mark, its time
 * so far), stopped where it failed, to come; null without declared steps. jobs/_macros.html's step_list is the same. */
export function stepList(job, now = Date.now()) {
  const states = stepStates(job, operationInfo(job).steps, now);
  if (!states.length) return null;
  return el("ol", { class: "steps", "aria-label": "Steps" }, states.map(({ name, state, seconds }) =>
    el("li", { class: `step step-${state}`, "aria-current": state === "current" ? "step" : null },
      el("span", { class: "step-mark", "aria-hidden": "true" }), el("span", { class: "step-name" }, name),
      state === "done" || state === "stopped" ? el("span", { class: "visually-hidden" }, ` (${state})`) : null,
      seconds === null ? null : el("span", { class: "step-time" }, stepTime(seconds, state === "current")))));
}

/** Put ``job``'s step list in ``container`` (in place of the one there), or take it away; the list or null. */
export function showSteps(container, job, now = Date.now()) {
  const fresh = stepList(job, now);
  const shown = container.querySelector("ol.steps");
  if (fresh && shown) shown.replaceWith(fresh);
  else if (fresh) container.append(fresh);
  else if (shown) shown.remove();
  return fresh;
}

/** "Step 3 of 8" for the tracker's short form. */
export function stepText(job) {
  return stepSummary(job);
}
