// The CRM workspace's frame: log-out, and the toasts of failed htmx requests.
import { api, ApiError, errorText, toast } from "./api.js";

document.querySelector('[data-testid="logout"]')?.addEventListener("click", async () => {
  try {
    await api("POST", "/api/auth/logout");
  } finally {
    location.assign("/login");
  }
});

document.body.addEventListener("htmx:responseError", (event) => {
  const xhr = event.detail.xhr;
  let code = "bad_request";
  try {
    code = JSON.parse(xhr.responseText).error.code || code;
  } catch {
    // not a JSON error body: keep the generic text
  }
  toast(errorText(new ApiError(xhr.status, code, "")), "error");
});
