// Task reminders in the widget: asked for every poll_seconds (GET /api/reminders,
// the daemon's [tasks] reminder_interval); each stays until dismissed.
import { api } from "./api.js";
import { formatDateTime, t } from "./i18n.js";

const box = document.createElement("aside");
box.className = "reminders";
box.dataset.testid = "reminders";
box.setAttribute("aria-live", "polite");

function show(reminders) {
  box.replaceChildren();
  for (const task of reminders) {
    const item = document.createElement("div");
    item.className = "reminder";
    item.dataset.testid = "reminder";
    item.setAttribute("role", "alert");
    const text = document.createElement("span");
    const when = task.due_at ? formatDateTime(task.due_at) : "";
    const who = task.contact ? ` — ${task.contact.display_name}` : "";
    text.textContent = t("Reminder: {title} at {when}", { title: task.title, when }) + who;
    const dismiss = document.createElement("button");
    dismiss.type = "button";
    dismiss.textContent = t("Dismiss");
    dismiss.addEventListener("click", async () => {
      await api("POST", `/api/reminders/${task.id}/dismiss`).catch(() => {});
      item.remove();
    });
    item.append(text, dismiss);
    box.append(item);
  }
}

async function poll() {
  let wait = 30;
  try {
    const reply = await api("GET", "/api/reminders", undefined, { quiet: true });
    show(reply.reminders);
    wait = reply.poll_seconds;
  } catch {
    // The next poll tries again.
  }
  setTimeout(poll, wait * 1000);
}

// Started by the page once its catalogue is loaded.
export function startReminders() {
  box.setAttribute("aria-label", t("Reminders"));
  document.body.append(box);
  poll();
}
