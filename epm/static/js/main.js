// main.js — the one entry point on every signed-in page: widgets subscribe to jobs.js, then it goes live.

import * as jobs from "./jobs.js";
import * as money from "./money.js";
import * as badge from "./badge.js";
import * as dashboard from "./dashboard.js";
import * as programs from "./programs.js";
import "./results.js";
import * as progress from "./progress.js";
import * as time from "./time.js";
import * as title from "./title.js";
import * as toast from "./toast.js";
import * as tracker from "./tracker.js";
import * as widths from "./widths.js";

widths.init();
badge.init(document.querySelectorAll("[data-running-badge]"));
progress.init(document.querySelectorAll("section.operation[data-operation][data-session-id]"));
dashboard.init(document.querySelector("[data-jobs-dashboard]"), document.querySelector("[data-live-job]"));
programs.init(document.querySelector("[data-programs-in-progress]"), document.querySelector("[data-programs-recent]"));
// After the page's own widgets, so the tracker knows which jobs the page already shows.
tracker.init(document.getElementById("job-tracker"));
title.init();
time.init();
money.init();
jobs.start();
toast.init(document.getElementById("toasts"));

// Signing out forgets this user's jobs in this browser (a shared computer keeps nothing of them).
for (const form of document.querySelectorAll('form[action$="/logout"]')) {
  form.addEventListener("submit", () => jobs.forget());
}
