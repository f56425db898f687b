// widths.js — bars drawn by the server carry their width in data-width, since the Content-Security-Policy
// allows no style attributes; setting it here (through the CSSOM, which the policy allows) draws them.

export function init(root = document) {
  for (const bar of root.querySelectorAll("[data-width]")) {
    const value = Number(bar.dataset.width);
    if (Number.isFinite(value)) bar.style.width = `${Math.max(0, Math.min(100, value))}%`;
  }
}
