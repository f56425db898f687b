// money.js — amounts in their session's currency, for the reader's locale: <data value data-currency>.
// Large sums without cents (4,500,000 is not more precise with .00); the server's text stays without JS.

const WHOLE_FROM = 1000;

/** "$4,500,000", "€950.50" — ``amount`` a number or numeric string, ``currency`` an ISO 4217 code. */
export function formatMoney(amount, currency, locale = undefined) {
  const value = Number(amount);
  if (!Number.isFinite(value)) return String(amount);
  const digits = Math.abs(value) >= WHOLE_FROM || Number.isInteger(value) ? 0 : 2;
  try {
    return new Intl.NumberFormat(locale, { style: "currency", currency, minimumFractionDigits: digits,
      maximumFractionDigits: digits }).format(value);
  } catch {
    return `${value.toLocaleString(locale, { maximumFractionDigits: digits })} ${currency}`;
  }
}

export function init(root = document) {
  for (const node of root.querySelectorAll("data[data-currency]")) {
    node.textContent = formatMoney(node.value, node.dataset.currency);
  }
}
