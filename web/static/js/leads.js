// The leads pool: take (the loser of a race is told who won), close, release, add.
import { api, toast } from "./api.js";
import { loadCatalogue, localiseTimes, t } from "./i18n.js";

await loadCatalogue(document.body.dataset.lang);
localiseTimes(document);

function rowOf(id) {
  return document.querySelector(`tr[data-lead="${id}"]`);
}

async function take(id, button) {
  button.disabled = true;
  try {
    await api("POST", `/api/leads/${id}/take`, undefined, { quiet: true });
    toast(t("The lead is yours."), "info");
    rowOf(id)?.remove();
  } catch (error) {
    const owner = error.details && error.details.owner;
    const text =
      error.code === "conflict"
        ? t("{name} took this lead first.", {
            name: owner ? owner.display_name : t("Someone else"),
          })
        : t("The lead could not be taken.");
    toast(text, "error");
    const cell = button.closest("td");
    button.remove();
    const note = document.createElement("span");
    note.className = "taken";
    note.dataset.testid = "taken-by";
    note.textContent = text;
    cell.append(note);
  }
}

async function close(id, mode) {
  const body = { outcome: mode === "unsuitable" ? "unsuitable" : "done" };
  if (mode === "convert") body.convert = true;
  if (mode === "unsuitable") {
    const reason = prompt(t("Why is this lead unsuitable?"));
    if (!reason) return;
    body.reason = reason;
  }
  await api("POST", `/api/leads/${id}/close`, body);
  toast(t("The lead is closed."), "info");
  rowOf(id)?.remove();
}

document.addEventListener("click", async (event) => {
  const el = event.target.closest("button");
  if (!el) return;
  try {
    if (el.dataset.take) await take(el.dataset.take, el);
    else if (el.dataset.close) await close(el.dataset.id, el.dataset.close);
    else if (el.dataset.release) {
      await api("POST", `/api/leads/${el.dataset.release}/release`);
      rowOf(el.dataset.release)?.remove();
    }
  } catch {
    // api() showed the error
  }
});

document.querySelector('[data-testid="add-lead"]')?.addEventListener("submit", async (event) => {
  event.preventDefault();
  const form = new FormData(event.target);
  const body = { to_pool: form.get("to_pool") === "on", phones: [] };
  for (const key of ["first_name", "last_name", "company"]) {
    const value = String(form.get(key) || "").trim();
    if (value) body[key] = value;
  }
  const phone = String(form.get("phone") || "").trim();
  if (phone) body.phones.push(phone);
  try {
    await api("POST", "/api/leads/manual", body);
    location.reload();
  } catch {
    // shown
  }
});
