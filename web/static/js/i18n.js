// The browser's catalogue (msgid -> msgstr, built from the same .po files as the
// pages) and formatting in the browser's locale and time zone (Intl).
let catalogue = {};
let language = document.documentElement.lang || "en";

export async function loadCatalogue(lang) {
  language = lang || language;
  try {
    const response = await fetch(`/i18n/${encodeURIComponent(language)}.json`, {
      credentials: "same-origin",
    });
    if (response.ok) catalogue = await response.json();
  } catch {
    // Without the catalogue the page shows its msgids (English), still usable.
  }
}

// t("Hello {name}", {name: "Ann"}): the translated text with its values put in.
export function t(msgid, values) {
  let text = Object.prototype.hasOwnProperty.call(catalogue, msgid) ? catalogue[msgid] : msgid;
  if (values) {
    text = text.replace(/\{(\w+)\}/g, (whole, key) =>
      Object.prototype.hasOwnProperty.call(values, key) ? String(values[key]) : whole,
    );
  }
  return text;
}

// The browser's own locale when it is of the page's language (en-GB dates for
// an English page in Britain), else the page's language.
function locale() {
  const own = navigator.language || "";
  return own.split("-")[0] === language ? own : language;
}

export function formatDateTime(iso) {
  const when = new Date(iso);
  if (Number.isNaN(when.getTime())) return iso;
  return new Intl.DateTimeFormat(locale(), { dateStyle: "short", timeStyle: "short" }).format(when);
}

export function formatDuration(seconds) {
  if (seconds === null || seconds === undefined || seconds === "" || Number.isNaN(+seconds)) {
    return "—";
  }
  const total = Math.max(0, Math.round(+seconds));
  const h = Math.floor(total / 3600);
  const m = Math.floor((total % 3600) / 60);
  const s = String(total % 60).padStart(2, "0");
  return h ? `${h}:${String(m).padStart(2, "0")}:${s}` : `${m}:${s}`;
}

export function formatNumber(n) {
  return new Intl.NumberFormat(locale()).format(n);
}

// Server-rendered times are UTC ISO strings in <time data-format="datetime">.
export function localiseTimes(root) {
  for (const el of root.querySelectorAll("time[data-format=datetime]")) {
    const iso = el.getAttribute("datetime");
    if (iso) el.textContent = formatDateTime(iso);
  }
  for (const el of root.querySelectorAll("[data-format=duration]")) {
    el.textContent = formatDuration(el.dataset.seconds);
  }
}
