// title.js — while the tab is hidden, its title shows progress ("(45%) Programs · epm"), and a tick
// once a job it watched finished; the plain title comes back when the user returns.

import * as jobs from "./jobs.js";
import { averagePercent } from "./ui.js";

const base = document.title;
let finishedWhileHidden = false;

export function init() {
  jobs.subscribe(({ changed }) => {
    if (document.hidden && changed.some(({ job, previous }) => job.terminal && previous && !previous.terminal)) {
      finishedWhileHidden = true;
    }
    update();
  });
  document.addEventListener("visibilitychange", () => {
    if (!document.hidden) finishedWhileHidden = false;
    update();
  });
}

function update() {
  if (!document.hidden) {
    document.title = base;
    return;
  }
  const running = jobs.active();
  if (running.length) {
    document.title = `(${averagePercent(running)}%) ${base}`;
  } else {
    document.title = finishedWhileHidden ? `✓ ${base}` : base;
  }
}
