// HTTP: the /api/v1 client and the mapping of filter controls to API parameters.

export const API = "/api/v1";

export const PAGE = 60;

export class ApiError extends Error {
  constructor(status, message) { super(message); this.status = status; }
}

export async function api(path, options) {
  let response;
  try {
    response = await fetch(API + path, Object.assign({ credentials: "same-origin", headers: { Accept: "application/json" } }, options));
  } catch (e) {
    throw new ApiError(0, "The clipdex server cannot be reached. Is it still running?");
  }
  if (response.status === 401) {
    window.location.href = "/login";
    throw new ApiError(401, "Sign in to continue.");
  }
  let body = null;
  try { body = await response.json(); } catch (e) { /* not JSON */ }
  if (!response.ok) {
    const message = body && body.error && body.error.message ? body.error.message : `The server answered ${response.status}.`;
    throw new ApiError(response.status, message);
  }
  return body;
}

export function nextDay(isoDate) {
  const d = new Date(isoDate + "T00:00:00");
  d.setDate(d.getDate() + 1);
  const pad = (n) => String(n).padStart(2, "0");
  return `${d.getFullYear()}-${pad(d.getMonth() + 1)}-${pad(d.getDate())}`;
}

export function folderGlob(folder) {
  const value = folder.trim();
  if (!value) return null;
  return /[*?[]/.test(value) ? value : value.replace(/\/+$/, "") + "/*";
}
