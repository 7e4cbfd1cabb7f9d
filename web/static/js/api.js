// fetch with the session's CSRF token; JSON errors become ApiError and a toast.
import { t } from "./i18n.js";

export class ApiError extends Error {
  constructor(status, code, message, details) {
    super(message);
    this.status = status;
    this.code = code;
    this.details = details || {};
  }
}

export function csrfToken() {
  const meta = document.querySelector('meta[name="csrf-token"]');
  return meta ? meta.content : "";
}

// The interface's words for an error code (the server's message is English).
export function errorText(error) {
  switch (error.code) {
    case "unauthenticated":
      return t("Your session has ended. Please log in again.");
    case "forbidden":
      return t("You are not allowed to do this.");
    case "not_found":
      return t("Not found: it may have been removed.");
    case "conflict":
      return t("Not possible in the call's current state.");
    case "too_large":
      return t("Too long: the text is over the limit.");
    case "rate_limited":
      return t("Too many requests; wait a moment.");
    case "unavailable":
      return t("The telephony is not available right now; try again.");
    case "bad_request":
      return t("The request was refused: please check what you entered.");
    case "network":
      return t("The server cannot be reached.");
    case "timeout":
      return t("No answer from the server in time.");
    case "offline":
      return t("Not connected; reconnecting…");
    default:
      return t("Something went wrong.");
  }
}

export function toast(text, kind = "info") {
  const box = document.getElementById("toasts");
  if (!box) return;
  const el = document.createElement("div");
  el.className = `toast toast-${kind}`;
  el.dataset.testid = "toast";
  el.dataset.kind = kind;
  el.setAttribute("role", kind === "error" ? "alert" : "status");
  el.textContent = text;
  el.tabIndex = 0;
  const remove = () => el.remove();
  el.addEventListener("click", remove);
  el.addEventListener("keydown", (e) => {
    if (e.key === "Escape" || e.key === "Enter") remove();
  });
  box.append(el);
  setTimeout(remove, kind === "error" ? 10000 : 5000);
}

export async function api(method, path, body, { quiet = false } = {}) {
  const headers = { Accept: "application/json" };
  if (method !== "GET" && method !== "HEAD") headers["X-CSRF-Token"] = csrfToken();
  const init = { method, headers, credentials: "same-origin" };
  if (body !== undefined) {
    headers["Content-Type"] = "application/json";
    init.body = JSON.stringify(body);
  }
  let response;
  try {
    response = await fetch(path, init);
  } catch {
    const error = new ApiError(0, "network", "network error");
    if (!quiet) toast(errorText(error), "error");
    throw error;
  }
  if (response.status === 204) return null;
  let data = null;
  try {
    data = await response.json();
  } catch {
    data = null;
  }
  if (!response.ok) {
    const e = (data && data.error) || {};
    const error = new ApiError(response.status, e.code || "internal", e.message || "", e.details);
    if (response.status === 401) {
      goToLogin();
    } else if (!quiet) {
      toast(errorText(error), "error");
    }
    throw error;
  }
  return data;
}

export function goToLogin() {
  const here = location.pathname + location.search;
  location.assign(`/login?next=${encodeURIComponent(here)}`);
}
