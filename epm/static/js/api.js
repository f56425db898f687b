// api.js — the HTTP side of /api/background-jobs: JSON with the page's CSRF token, errors as ApiError.

export const LIST_URL = "/api/background-jobs?limit=50";

export class ApiError extends Error {
  constructor(status, code, message, body) {
    super(message);
    this.status = status;
    this.code = code;
    this.body = body;
  }
}

export function metaContent(name) {
  const meta = document.querySelector(`meta[name="${name}"]`);
  return meta ? meta.content : null;
}

/** POST with the page's CSRF token; resolves to the JSON body or throws ApiError with the server's message. */
export async function post(url, payload) {
  const headers = { Accept: "application/json", "X-CSRFToken": metaContent("csrf-token") || "" };
  const init = { method: "POST", headers, credentials: "same-origin" };
  if (payload !== undefined) {
    headers["Content-Type"] = "application/json";
    init.body = JSON.stringify(payload);
  }
  let response;
  try {
    response = await fetch(url, init);
  } catch {
    throw new ApiError(0, "network", "The server could not be reached. Check your connection and try again.");
  }
  return readJson(response);
}

/** The user's jobs: ``{jobs, etag, version}``, or null when unchanged since ``etag`` (304). */
export async function fetchList(etag) {
  const headers = { Accept: "application/json" };
  if (etag) headers["If-None-Match"] = etag;
  const response = await fetch(LIST_URL, { headers, credentials: "same-origin", cache: "no-store" });
  if (response.status === 304) return null;
  const body = await readJson(response);
  return { jobs: body.jobs, etag: response.headers.get("ETag"), version: body.version };
}

/**
 * What changed since ``version`` (a ``version`` the list answered): ``{jobs, version}`` with only the jobs
 * written since, read from Redis alone, or null when nothing was (304).
 */
export async function fetchChanges(version) {
  const url = `${LIST_URL}&since=${encodeURIComponent(version)}`;
  const response = await fetch(url, { headers: { Accept: "application/json" }, credentials: "same-origin",
    cache: "no-store" });
  if (response.status === 304) return null;
  const body = await readJson(response);
  return { jobs: body.jobs, version: body.version };
}

/** One job, or null when the server does not know it (404). */
export async function fetchJob(id) {
  const response = await fetch(`/api/background-jobs/${encodeURIComponent(id)}`, {
    headers: { Accept: "application/json" }, credentials: "same-origin", cache: "no-store",
  });
  if (response.status === 404) return null;
  return (await readJson(response)).job;
}

export async function readJson(response) {
  let body = null;
  try {
    body = await response.json();
  } catch {
    body = null;
  }
  if (!response.ok) {
    const error = (body && body.error) || {};
    throw new ApiError(response.status, error.code || "http_" + response.status,
      error.message || `The server answered ${response.status}. Try again in a moment.`, body);
  }
  return body;
}
