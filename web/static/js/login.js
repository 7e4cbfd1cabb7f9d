import { loadCatalogue, t } from "./i18n.js";

const form = document.getElementById("login-form");
const error = document.querySelector("[data-testid=login-error]");
const ready = loadCatalogue(document.documentElement.lang);
form.querySelector("[data-testid=login-submit]").disabled = false;

function localNext(target) {
  return target && target.startsWith("/") && !target.startsWith("//") && !target.includes("\\")
    ? target
    : "/widget";
}

form.addEventListener("submit", async (event) => {
  event.preventDefault();
  await ready;
  error.hidden = true;
  const username = form.username.value.trim();
  const password = form.password.value;
  if (!username || !password) {
    error.textContent = t("Enter your user name and password.");
    error.hidden = false;
    return;
  }
  const button = form.querySelector("[data-testid=login-submit]");
  button.disabled = true;
  try {
    const response = await fetch("/api/auth/login", {
      method: "POST",
      headers: { "Content-Type": "application/json", Accept: "application/json" },
      credentials: "same-origin",
      body: JSON.stringify({ username, password }),
    });
    if (response.ok) {
      location.assign(localNext(form.dataset.next));
      return;
    }
    error.textContent =
      response.status === 429
        ? t("Too many failed attempts; try again later.")
        : response.status === 401
          ? t("Wrong user name or password.")
          : t("Something went wrong.");
  } catch {
    error.textContent = t("The server cannot be reached.");
  }
  error.hidden = false;
  button.disabled = false;
  form.password.select();
});
