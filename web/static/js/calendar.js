// The calendar: month, week (Monday first) or day, in the browser's time zone.
// Drag a task to another day: its due time moves there, the time of day kept.
import { api } from "./api.js";
import { loadCatalogue, t } from "./i18n.js";

await loadCatalogue(document.body.dataset.lang);
const root = document.querySelector('[data-testid="calendar"]');
const view = root.dataset.view;
const lang = document.documentElement.lang || "en";

function iso(day) {
  const p = (n) => String(n).padStart(2, "0");
  return `${day.getFullYear()}-${p(day.getMonth() + 1)}-${p(day.getDate())}`;
}
function parseDay(text) {
  const [y, m, d] = text.split("-").map(Number);
  return new Date(y, m - 1, d);
}
function addDays(day, n) {
  return new Date(day.getFullYear(), day.getMonth(), day.getDate() + n);
}
function monday(day) {
  return addDays(day, -((day.getDay() + 6) % 7));
}

let anchor = root.dataset.date ? parseDay(root.dataset.date) : new Date();
anchor = new Date(anchor.getFullYear(), anchor.getMonth(), anchor.getDate());

function days() {
  if (view === "day") return [anchor];
  if (view === "week") {
    const start = monday(anchor);
    return Array.from({ length: 7 }, (_, i) => addDays(start, i));
  }
  const start = monday(new Date(anchor.getFullYear(), anchor.getMonth(), 1));
  return Array.from({ length: 42 }, (_, i) => addDays(start, i));
}

function title(list) {
  const f = (d, o) => new Intl.DateTimeFormat(lang, o).format(d);
  if (view === "month") return f(anchor, { month: "long", year: "numeric" });
  if (view === "day") return f(anchor, { dateStyle: "full" });
  return `${f(list[0], { dateStyle: "medium" })} – ${f(list[6], { dateStyle: "medium" })}`;
}

async function render() {
  const list = days();
  const start = list[0];
  const end = addDays(list[list.length - 1], 1);
  const tasks = await api(
    "GET",
    `/api/calendar?start=${encodeURIComponent(start.toISOString())}&end=${encodeURIComponent(end.toISOString())}`,
  );
  document.querySelector('[data-testid="cal-title"]').textContent = title(list);
  const byDay = new Map();
  for (const task of tasks) {
    const key = iso(new Date(task.due_at));
    if (!byDay.has(key)) byDay.set(key, []);
    byDay.get(key).push(task);
  }
  root.replaceChildren();
  const today = iso(new Date());
  for (const day of list) {
    const key = iso(day);
    const cell = document.createElement("section");
    cell.className = "cal-day";
    if (key === today) cell.classList.add("today");
    if (view === "month" && day.getMonth() !== anchor.getMonth()) cell.classList.add("other-month");
    cell.dataset.day = key;
    cell.dataset.testid = `day-${key}`;
    const head = document.createElement("h3");
    head.textContent = new Intl.DateTimeFormat(lang, {
      weekday: view === "month" ? undefined : "short",
      day: "numeric",
      month: view === "month" ? undefined : "short",
    }).format(day);
    cell.append(head);
    for (const task of byDay.get(key) || []) {
      const item = document.createElement("div");
      item.className = `cal-task kind-${task.kind}${task.done ? " done" : ""}`;
      item.draggable = true;
      item.tabIndex = 0;
      item.dataset.task = task.id;
      item.dataset.due = task.due_at;
      item.dataset.testid = "cal-task";
      const time = new Intl.DateTimeFormat(lang, { timeStyle: "short" }).format(
        new Date(task.due_at),
      );
      item.textContent = `${time} ${task.title}`;
      item.title = task.duration_minutes
        ? t("{title}, {minutes} min", { title: task.title, minutes: task.duration_minutes })
        : task.title;
      item.addEventListener("dragstart", (e) => e.dataTransfer.setData("text/plain", task.id));
      cell.append(item);
    }
    cell.addEventListener("dragover", (e) => e.preventDefault());
    cell.addEventListener("drop", (e) => {
      e.preventDefault();
      const id = e.dataTransfer.getData("text/plain");
      if (id) reschedule(id, key).catch(() => {});
    });
    root.append(cell);
  }
}

async function reschedule(id, dayKey) {
  const item = root.querySelector(`[data-task="${id}"]`);
  const due = new Date(item.dataset.due);
  const day = parseDay(dayKey);
  day.setHours(due.getHours(), due.getMinutes(), due.getSeconds(), 0);
  await api("PATCH", `/api/tasks/${id}`, { due_at: day.toISOString() });
  await render();
}

for (const button of document.querySelectorAll("[data-step]")) {
  button.addEventListener("click", () => {
    const step = Number(button.dataset.step);
    if (step === 0) anchor = new Date(new Date().setHours(0, 0, 0, 0));
    else if (view === "month") anchor = new Date(anchor.getFullYear(), anchor.getMonth() + step, 1);
    else anchor = addDays(anchor, step * (view === "week" ? 7 : 1));
    render().catch(() => {});
  });
}

render().catch(() => {});
