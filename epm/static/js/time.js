// time.js — relative times ("2 minutes ago") for <time datetime> elements marked data-relative; the exact
// time stays in the title for hover, in the server's format. Refreshed every 30 s.

const UNITS = [
  ["year", 365 * 24 * 3600], ["month", 30 * 24 * 3600], ["week", 7 * 24 * 3600], ["day", 24 * 3600],
  ["hour", 3600], ["minute", 60],
];

/** "just now", "2 minutes ago", "in 3 hours" */
export function relative(date, now = Date.now()) {
  const seconds = Math.round((date.getTime() - now) / 1000);
  if (Math.abs(seconds) < 45) return "just now";
  for (const [unit, size] of UNITS) {
    const count = Math.round(Math.abs(seconds) / size);
    if (count >= 1 && Math.abs(seconds) >= size * 0.75) {
      const label = `${count} ${unit}${count === 1 ? "" : "s"}`;
      return seconds < 0 ? `${label} ago` : `in ${label}`;
    }
  }
  return "just now";
}

/** The one exact format, as the server writes it: "2026-12-01 00:29 UTC". */
export function exact(date) {
  return `${date.toISOString().slice(0, 16).replace("T", " ")} UTC`;
}

/** A <time> element for an ISO string, relative text, exact time on hover. */
export function timeElement(iso) {
  const node = document.createElement("time");
  node.dataset.relative = "";
  node.dateTime = iso || "";
  refresh(node);
  return node;
}

function refresh(node) {
  const date = new Date(node.dateTime);
  if (Number.isNaN(date.getTime())) return;
  node.textContent = relative(date);
  node.title = exact(date);
}

export function init() {
  const all = () => document.querySelectorAll("time[data-relative]");
  all().forEach(refresh);
  setInterval(() => all().forEach(refresh), 30000);
}
