// badge.js — the number of running jobs on the nav's Programs link; hidden when none run.

import * as jobs from "./jobs.js";

export function init(badges) {
  if (!badges.length) return;
  jobs.subscribe(() => {
    const running = jobs.active().length;
    for (const badge of badges) {
      badge.textContent = running ? String(running) : "";
      badge.hidden = running === 0;
      badge.setAttribute("aria-label", `${running} running job${running === 1 ? "" : "s"}`);
    }
  });
}
