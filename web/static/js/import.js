// The import page: a file read by the server (preview), its columns mapped to
// fields, the bad rows listed by line, then the import confirmed; the history with
// undo; call lists from a filter; the do-not-call list.
import { api, ApiError, csrfToken, errorText, goToLogin, toast } from "./api.js";
import { formatDateTime, formatNumber, loadCatalogue, t } from "./i18n.js";

const page = document.getElementById("import-page");
const importer = page.dataset.importer === "true";
await loadCatalogue(document.body.dataset.lang);

// Every field's label (msgids for the catalogue).
const FIELD_LABELS = {
  full_name: t("Full name"),
  first_name: t("First name"),
  last_name: t("Last name"),
  company: t("Company"),
  phone: t("Phone numbers"),
  phone_mobile: t("Mobile phone"),
  phone_work: t("Work phone"),
  phone_home: t("Home phone"),
  email: t("Emails"),
  street: t("Street"),
  postcode: t("Postcode"),
  city: t("City"),
  region: t("Region"),
  country: t("Country (2 letters)"),
  tags: t("Tags"),
  note: t("Note"),
};
const LEAD_FIELDS = ["full_name", "first_name", "last_name", "company", "phone", "phone_mobile",
  "phone_work", "phone_home", "email", "note"];

function el(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(attrs)) {
    if (key === "text") node.textContent = value;
    else if (key.startsWith("data-")) node.setAttribute(key, value);
    else node[key] = value;
  }
  node.append(...children);
  return node;
}

async function upload(path, file, options) {
  const body = new FormData();
  body.append("file", file);
  body.append("options", JSON.stringify(options));
  let response;
  try {
    response = await fetch(path, {
      method: "POST",
      body,
      headers: { "X-CSRF-Token": csrfToken(), Accept: "application/json" },
      credentials: "same-origin",
    });
  } catch {
    const error = new ApiError(0, "network", "network error");
    toast(errorText(error), "error");
    throw error;
  }
  const data = await response.json().catch(() => null);
  if (!response.ok) {
    const e = (data && data.error) || {};
    const error = new ApiError(response.status, e.code || "internal", e.message || "", e.details);
    if (response.status === 401) goToLogin();
    throw error;
  }
  return data;
}

// ---------------------------------------------------------------- import

const form = document.getElementById("import-form");
const preview = document.getElementById("import-preview");
const result = page.querySelector('[data-testid="import-result"]');
const confirmButton = page.querySelector('[data-testid="import-confirm"]');
let current = null; // {file, mapping, preview}

function options(extra = {}) {
  const data = new FormData(form);
  const opts = {
    target: data.get("target"),
    header: data.get("header") === "on",
    duplicates: data.get("duplicates"),
    ...extra,
  };
  if (data.get("encoding")) opts.encoding = data.get("encoding");
  if (data.get("delimiter")) opts.delimiter = data.get("delimiter");
  return opts;
}

function showFileError(error) {
  result.hidden = false;
  result.className = "result problems";
  const rows = (error.details && error.details.rows) || [];
  if (rows.length) {
    result.textContent = t("The file cannot be read:") + " " +
      rows.slice(0, 5).map((r) => t("line {line}: {message}", r)).join("; ");
  } else if (error.code === "too_large") {
    result.textContent = t("The file is over the limit of {limit} bytes.", {
      limit: formatNumber((error.details && error.details.limit) || 0),
    });
  } else {
    result.textContent = error.message || errorText(error);
  }
}

let asked = 0; // only the answer to the latest preview is shown

async function refreshPreview() {
  if (!current) return;
  const mine = ++asked;
  const wanted = current;
  let body;
  try {
    body = await upload("/api/imports/preview", current.file, options({ mapping: current.mapping }));
  } catch (error) {
    if (mine !== asked) return;
    preview.hidden = true;
    if (error.status !== 401) showFileError(error);
    return;
  }
  if (mine !== asked || wanted !== current) return;
  current.mapping = body.mapping;
  current.preview = body;
  result.hidden = true;
  renderPreview(body);
}

function fieldSelect(index, chosen, target) {
  const allowed = target === "leads" ? LEAD_FIELDS : Object.keys(FIELD_LABELS).filter((f) => f !== "note");
  const select = el("select", { "data-testid": `map-${index}` });
  select.setAttribute("aria-label", t("Field of column {n}", { n: index + 1 }));
  select.append(el("option", { value: "", text: t("Do not import") }));
  for (const key of allowed) {
    select.append(el("option", { value: key, text: FIELD_LABELS[key], selected: key === chosen }));
  }
  if (target === "clients") {
    const custom = chosen && chosen.startsWith("custom:") ? chosen : "";
    select.append(el("option", {
      value: custom || "custom",
      text: custom ? t("Custom field: {name}", { name: custom.slice(7) }) : t("Custom field…"),
      selected: Boolean(custom),
    }));
  }
  select.addEventListener("change", () => {
    let value = select.value;
    if (value === "custom") {
      const header = current.preview.columns[index] || "";
      value = `custom:${header.replace(/^#/, "col")}`;
    }
    if (value) current.mapping[index] = value;
    else delete current.mapping[index];
    refreshPreview();
  });
  return select;
}

function renderPreview(body) {
  preview.hidden = false;
  const target = options().target;
  const readAs = page.querySelector('[data-testid="import-read-as"]');
  readAs.textContent = body.format === "xlsx"
    ? t("Read as an XLSX workbook.")
    : t("Read as CSV in {encoding}, delimiter “{delimiter}”.", {
      encoding: body.encoding,
      delimiter: body.delimiter === "\t" ? t("Tab") : body.delimiter,
    });
  const mappingBody = page.querySelector('[data-testid="import-mapping"] tbody');
  mappingBody.replaceChildren(...body.columns.map((name, index) => el("tr", {},
    el("th", { scope: "row", text: name }),
    el("td", {}, fieldSelect(index, body.mapping[index], target)),
    el("td", {
      className: "values",
      text: body.sample.slice(0, 3).map((row) => row[index] || "").filter(Boolean).join(" · "),
    }),
  )));
  const problems = page.querySelector('[data-testid="import-mapping-problems"]');
  problems.hidden = body.mapping_problems.length === 0;
  problems.textContent = body.mapping_problems.length
    ? t("The mapping cannot be used: map a column to a name or a company.")
    : "";
  const sample = page.querySelector('[data-testid="import-sample"]');
  sample.tHead.replaceChildren(el("tr", {}, el("th", { scope: "col", text: t("Line") }),
    ...body.columns.map((name, index) => el("th", {
      scope: "col",
      text: body.mapping[index] ? `${name} → ${labelOf(body.mapping[index])}` : name,
    }))));
  sample.tBodies[0].replaceChildren(...body.sample.map((row, i) => el("tr", {},
    el("td", { text: String(body.sample_lines[i]) }),
    ...body.columns.map((_, index) => el("td", { text: row[index] || "" })))));
  const c = body.counts;
  page.querySelector('[data-testid="import-counts"]').textContent = t(
    "{rows} rows: {create} to create, {update} to update, {skip} duplicates to skip, {bad} bad rows.",
    c,
  );
  fillList('[data-testid="import-bad-rows"]', body.bad_rows, c.bad);
  fillList('[data-testid="import-duplicates-list"]', body.skipped, c.skip);
  const usable = body.mapping_problems.length === 0 && c.create + c.update > 0;
  confirmButton.disabled = !usable;
  confirmButton.textContent = c.bad
    ? t("Import {n} rows and leave out the {bad} bad ones", { n: c.create + c.update, bad: c.bad })
    : t("Import {n} rows", { n: c.create + c.update });
}

function labelOf(field) {
  return field.startsWith("custom:") ? field.slice(7) : FIELD_LABELS[field] || field;
}

function fillList(selector, rows, total) {
  const section = page.querySelector(selector);
  section.hidden = rows.length === 0;
  const list = section.querySelector("ol");
  list.replaceChildren(...rows.map((r) => el("li", {
    "data-line": String(r.line),
    text: t("line {line}: {message}", r),
  })));
  if (total > rows.length) {
    list.append(el("li", { text: t("and {n} more", { n: total - rows.length }) }));
  }
}

if (importer) {
  form.addEventListener("change", (event) => {
    if (event.target.name === "file") {
      const file = event.target.files[0];
      current = file ? { file, mapping: null, preview: null } : null;
      if (!current) preview.hidden = true;
    } else if (current && event.target.name === "target") {
      current.mapping = null; // suggested again for the other kind
    }
    refreshPreview();
  });
  page.querySelector('[data-testid="import-cancel"]').addEventListener("click", () => {
    current = null;
    form.reset();
    preview.hidden = true;
  });
  confirmButton.addEventListener("click", async () => {
    if (!current) return;
    confirmButton.disabled = true;
    try {
      const done = await upload("/api/imports", current.file, options({
        mapping: current.mapping,
        skip_bad_rows: current.preview.counts.bad > 0,
      }));
      const r = done.record;
      result.className = "result";
      result.hidden = false;
      result.textContent = t("Imported: {created} created, {updated} updated, {skipped} skipped.", r);
      preview.hidden = true;
      current = null;
      form.reset();
      await loadHistory();
    } catch (error) {
      confirmButton.disabled = false;
      if (error.status !== 401) showFileError(error);
    }
  });
}

async function loadHistory() {
  const body = await api("GET", "/api/imports");
  const rows = page.querySelector('[data-testid="import-history"] tbody');
  rows.replaceChildren(...body.imports.map((h) => {
    const undo = h.undone_at
      ? el("span", { text: t("Undone {when}", { when: formatDateTime(h.undone_at) }) })
      : el("button", { type: "button", "data-testid": "import-undo", text: t("Undo") });
    if (!h.undone_at) {
      undo.addEventListener("click", () => askUndo(h, undo));
    }
    const tr = el("tr", { "data-id": h.id, className: h.undone_at ? "undone" : "" },
      el("td", { text: formatDateTime(h.created_at) }),
      el("td", { text: h.filename || "" }),
      el("td", { text: h.target === "leads" ? t("Leads") : t("Clients") }),
      el("td", { text: formatNumber(h.created) }),
      el("td", { text: formatNumber(h.updated) }),
      el("td", { text: formatNumber(h.skipped) }),
      el("td", {}, undo));
    return tr;
  }));
}

function askUndo(h, button) {
  const cell = button.parentElement;
  const sure = el("button", {
    type: "button",
    className: "primary",
    "data-testid": "import-undo-confirm",
    text: t("Remove the {created} created and restore the {updated} updated", h),
  });
  const cancel = el("button", { type: "button", text: t("Keep") });
  cancel.addEventListener("click", () => loadHistory());
  sure.addEventListener("click", async () => {
    sure.disabled = true;
    try {
      await api("POST", `/api/imports/${h.id}/undo`);
      toast(t("The import was undone."));
    } finally {
      await loadHistory();
    }
  });
  cell.replaceChildren(sure, " ", cancel);
  sure.focus();
}

// ---------------------------------------------------------------- call lists

const listForm = document.getElementById("calllist-form");
listForm.addEventListener("submit", async (event) => {
  event.preventDefault();
  const data = new FormData(listForm);
  const body = { name: data.get("name"), source: data.get("source") };
  const tags = String(data.get("tags") || "").split(",").map((s) => s.trim()).filter(Boolean);
  if (body.source === "clients") {
    body.tags = tags;
    body.mine = data.get("mine") === "on";
  } else if (data.get("mine") === "on") {
    body.owner = "me";
  }
  const out = page.querySelector('[data-testid="calllist-result"]');
  try {
    const made = await api("POST", "/api/call-lists", body);
    out.hidden = false;
    out.textContent = t("Call list “{name}”: {added} numbers from {contacts} contacts.", made);
    listForm.reset();
  } catch (error) {
    if (error.code === "bad_request" && error.details && error.details.path === "source") {
      out.hidden = false;
      out.textContent = t("No phone number among the contacts of this filter.");
    }
  }
});

// ---------------------------------------------------------------- do not call

async function loadDoNotCall() {
  const entries = await api("GET", "/api/do-not-call");
  const rows = page.querySelector('[data-testid="dnc-list"] tbody');
  rows.replaceChildren(...entries.map((e) => {
    const cell = el("td");
    if (importer) {
      const remove = el("button", { type: "button", "data-testid": "dnc-remove", text: t("Remove") });
      remove.setAttribute("aria-label", t("Remove {number}", e));
      remove.addEventListener("click", async () => {
        await api("DELETE", `/api/do-not-call/${e.id}`);
        await loadDoNotCall();
      });
      cell.append(remove);
    }
    return el("tr", {},
      el("td", { text: e.number }),
      el("td", { text: e.prefix ? t("Prefix") : t("Number") }),
      el("td", { text: e.reason || "" }),
      cell);
  }));
}

const dncForm = document.getElementById("dnc-form");
if (dncForm) {
  dncForm.addEventListener("submit", async (event) => {
    event.preventDefault();
    const data = new FormData(dncForm);
    try {
      await api("POST", "/api/do-not-call", {
        number: data.get("number"),
        prefix: data.get("prefix") === "on",
        reason: data.get("reason") || null,
      }, { quiet: true });
      dncForm.reset();
      await loadDoNotCall();
    } catch (error) {
      if (error.code === "conflict") toast(t("Already on the do-not-call list."), "error");
      else if (error.code === "bad_request") toast(t("Not a phone number, nor a prefix (+ and digits)."), "error");
      else toast(errorText(error), "error");
    }
  });
}

if (importer) await loadHistory();
await loadDoNotCall();
page.dataset.ready = "true";
