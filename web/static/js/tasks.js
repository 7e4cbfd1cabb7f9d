// The tasks' kanban: drag a card (or use its buttons) to change its status; add a
// task; call now; today's call tasks to a dialer list.
import { api, toast } from "./api.js";
import { loadCatalogue, localiseTimes, t } from "./i18n.js";

await loadCatalogue(document.body.dataset.lang);
localiseTimes(document);

async function move(id, status) {
  await api("POST", `/api/tasks/${id}/status`, { status });
  location.reload();
}

for (const card of document.querySelectorAll("[data-task]")) {
  card.addEventListener("dragstart", (e) => e.dataTransfer.setData("text/plain", card.dataset.task));
}
for (const column of document.querySelectorAll(".kanban .column")) {
  column.addEventListener("dragover", (e) => e.preventDefault());
  column.addEventListener("drop", async (e) => {
    e.preventDefault();
    const id = e.dataTransfer.getData("text/plain");
    if (id) await move(id, column.dataset.status).catch(() => {});
  });
}

document.addEventListener("click", async (event) => {
  const el = event.target.closest("button");
  if (!el) return;
  try {
    if (el.dataset.move) await move(el.closest("[data-task]").dataset.task, el.dataset.move);
    else if (el.dataset.call) {
      const r = await api("POST", `/api/tasks/${el.dataset.call}/call`);
      toast(t("Calling {number}…", { number: r.to }), "info");
    } else if ("dialerList" in el.dataset) {
      const r = await api("POST", "/api/tasks/dialer-list", {});
      toast(t("Dialer list “{name}”: {n} numbers.", { name: r.name, n: r.added }), "info");
    }
  } catch {
    // api() showed the error
  }
});

document.querySelector('[data-testid="add-task"]')?.addEventListener("submit", async (event) => {
  event.preventDefault();
  const form = new FormData(event.target);
  const body = { title: String(form.get("title")).trim(), kind: form.get("kind") };
  const due = form.get("due");
  if (due) body.due_at = new Date(due).toISOString();
  if (form.get("duration")) body.duration_minutes = Number(form.get("duration"));
  if (form.get("remind")) body.remind_minutes = Number(form.get("remind"));
  try {
    await api("POST", "/api/tasks", body);
    location.reload();
  } catch {
    // shown
  }
});
