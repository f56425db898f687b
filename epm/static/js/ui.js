// ui.js — small pure functions that build elements from a job. Text goes in with textContent, never innerHTML.

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
    "aria-label": label || `${job.title || "Job"} progress` }, el("div", { class: "progress-fill" }));
  updateProgressBar(bar, job);
  return bar;
}

export function updateProgressBar(bar, job) {
  const value = percent(job);
  bar.setAttribute("aria-valuenow", String(value));
  bar.firstElementChild.style.width = `${value}%`;
}

/** Where the job's result is shown (an operation's ``result.url``), or null. */
export function resultUrl(job) {
  const url = job.result && job.result.url;
  return typeof url === "string" && url.startsWith("/") ? url : null;
}

export function viewLabel(job) {
  return (job.result && job.result.view_label) || "View result";
}

export function readyText(job) {
  return (job.result && job.result.ready) || `${job.title || "Job"} finished`;
}

export function failureText(job) {
  return job.error || "It stopped with an error.";
}

/** "Still running (45%) — Scheduling tasks" */
export function runningText(job) {
  const message = job.message ? ` — ${job.message}` : "";
  return `${job.status === "pending" ? "Starting" : "Still running"} (${percent(job)}%)${message}`;
}
