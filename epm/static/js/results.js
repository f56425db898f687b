// results.js — the result pages (program, canvas, research): a print button, every <details> open on
// paper, and the Gantt chart scrolled so that today is in view. The pages work without it.

/** Where to scroll a chart so that a line at `percent` of its width sits a third of the way in. */
export function scrollFor(percent, chartWidth, viewWidth) {
  const target = (percent / 100) * chartWidth - viewWidth / 3;
  return Math.max(0, Math.min(target, chartWidth - viewWidth));
}

function showToday(root) {
  const scroller = root.querySelector(".gantt-scroll");
  const line = root.querySelector('[data-line="today"] line');
  if (!scroller || !line || scroller.scrollWidth <= scroller.clientWidth) return;
  const percent = parseFloat(line.getAttribute("x1"));
  if (Number.isFinite(percent)) scroller.scrollLeft = scrollFor(percent, scroller.scrollWidth, scroller.clientWidth);
}

export function init(doc = document) {
  for (const button of doc.querySelectorAll("[data-print]")) {
    button.hidden = false;
    button.addEventListener("click", () => window.print());
  }
  const opened = [];
  window.addEventListener("beforeprint", () => {
    for (const details of doc.querySelectorAll("main details:not([open])")) {
      details.open = true;
      opened.push(details);
    }
  });
  window.addEventListener("afterprint", () => {
    for (const details of opened.splice(0)) details.open = false;
  });
  for (const chart of doc.querySelectorAll("[data-gantt]")) showToday(chart);
}

if (typeof document !== "undefined") init();
