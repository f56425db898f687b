// programs.js — the Programs page's "In progress" and "Recently generated" sections, live. The operation
// that makes programs is the one whose name the page gives (data-programs-in-progress="epm_generation").

import * as jobs from "./jobs.js";
import { el, progressBar, runningText, updateProgressBar } from "./ui.js";
import { timeElement } from "./time.js";

const RECENT = 5;

export function init(inProgress, recent) {
  const operation = inProgress?.dataset.programsInProgress;
  if (!operation || !recent) return;
  const names = new Map();
  let askedNames = false;

  jobs.subscribe(({ changed }) => {
    renderRunning();
    if (changed.some(({ job, previous }) => job.job_type === operation && job.status === "completed"
        && (!previous || previous.status !== "completed"))) {
      refreshRecent();
    }
  });

  function list(section) {
    let ul = section.querySelector("ul.plain-list");
    if (!ul) {
      ul = el("ul", { class: "plain-list" });
      section.append(ul);
    }
    return ul;
  }

  function renderRunning() {
    const running = jobs.active().filter((job) => job.job_type === operation);
    const ids = new Set(running.map((job) => job.id));
    for (const item of inProgress.querySelectorAll("li.running-program")) {
      const job = jobs.get(item.dataset.jobId);
      // Gone only when the job is known to have ended (the server's list may hold jobs this page never heard of).
      if (job && !ids.has(job.id)) item.remove();
    }
    const ul = list(inProgress);
    for (const job of running) {
      let item = ul.querySelector(`li[data-job-id="${CSS.escape(job.id)}"]`);
      if (!item) {
        item = el("li", { class: "running-program", dataset: { jobId: job.id } },
          el("strong", { class: "program-session" }, sessionName(job)), " · ",
          el("a", { href: `/sessions/${encodeURIComponent(job.session_id)}` }, "session"),
          progressBar(job), el("p", { class: "progress-text" }));
        ul.append(item);
      }
      const bar = item.querySelector(".progress");
      if (bar) updateProgressBar(bar, job);
      const text = item.querySelector(".progress-text");
      if (text) text.textContent = runningText(job);
    }
    const empty = inProgress.querySelector("p.muted");
    const count = ul.children.length;
    if (empty) empty.hidden = count > 0;
    else if (!count) inProgress.append(el("p", { class: "muted" }, "Nothing is being generated right now."));
    ul.hidden = count === 0;
  }

  function sessionName(job) {
    const name = names.get(String(job.session_id));
    if (name) return name;
    if (!askedNames) {
      askedNames = true;
      loadNames();
    }
    return `Session ${job.session_id}`;
  }

  async function loadNames() {
    try {
      const response = await fetch("/api/sessions", { headers: { Accept: "application/json" } });
      if (!response.ok) return;
      for (const session of (await response.json()).sessions) names.set(String(session.id), session.name);
      for (const item of inProgress.querySelectorAll("li.running-program")) {
        const job = jobs.get(item.dataset.jobId);
        const strong = item.querySelector(".program-session");
        if (job && strong && names.has(String(job.session_id))) strong.textContent = names.get(String(job.session_id));
      }
    } catch {
      // The names are a nicety; the link to the session still works.
    }
  }

  async function refreshRecent() {
    let programs;
    try {
      const response = await fetch(`/api/programs?limit=${RECENT}`, { headers: { Accept: "application/json" } });
      if (!response.ok) return;
      programs = (await response.json()).programs;
    } catch {
      return;
    }
    const ul = list(recent);
    ul.replaceChildren(...programs.map((program) => el("li", {},
      el("a", { href: program.url }, program.name), " ",
      el("span", { class: "muted" }, timeElement(program.created_at)))));
    for (const paragraph of recent.querySelectorAll(":scope > p")) paragraph.remove();
  }
}
