// The clients' pages: the list's times, the form (create / edit through the JSON
// API), and the card's buttons: click-to-call through the live connection (the
// widget's call.originate), delete and merge with a confirmation.
import { api, ApiError, errorText, toast } from "./api.js";
import { loadCatalogue, localiseTimes, t } from "./i18n.js";
import { Live } from "./ws.js";

const $ = (id, root = document) => root.querySelector(`[data-testid="${id}"]`);

await loadCatalogue(document.body.dataset.lang);
localiseTimes(document);
document.body.addEventListener("htmx:afterSwap", (e) => localiseTimes(e.detail.target.parentNode || document));
document.body.addEventListener("htmx:afterRequest", (e) => {
  const form = e.detail.elt;
  if (e.detail.successful && form && form.matches && form.matches("[data-testid=note-form]")) form.reset();
});

// --- the form ----------------------------------------------------------------

const form = document.getElementById("client-form");
if (form) wireForm(form);

function wireForm(form) {
  const kindOf = () => {
    const checked = form.querySelector("input[name=kind]:checked");
    return checked ? checked.value : form.dataset.kind;
  };
  const showKind = () => {
    const kind = kindOf();
    for (const el of form.querySelectorAll(".for-person")) el.hidden = kind !== "person";
    for (const el of form.querySelectorAll(".for-company")) el.hidden = kind !== "company";
  };
  form.addEventListener("change", (e) => {
    if (e.target.name === "kind") showKind();
    if (e.target.name === "visibility") showSharing();
  });
  const showSharing = () => {
    const privateOn = form.querySelector("input[name=visibility][value=private]").checked;
    form.querySelector(".shared-with").hidden = !privateOn;
  };
  showKind();
  showSharing();

  const rows = $("phone-rows", form);
  $("phone-add", form).addEventListener("click", () => {
    const first = rows.querySelector("li");
    const row = first.cloneNode(true);
    row.querySelector("input").value = "";
    row.querySelector("select").value = "mobile";
    rows.append(row);
    row.querySelector("input").focus();
  });
  rows.addEventListener("click", (e) => {
    const remove = e.target.closest("[data-testid=phone-remove]");
    if (!remove) return;
    const row = remove.closest("li");
    if (rows.children.length > 1) row.remove();
    else row.querySelector("input").value = "";
  });

  form.addEventListener("submit", async (e) => {
    e.preventDefault();
    const error = $("form-error", form);
    error.hidden = true;
    for (const el of form.querySelectorAll("[aria-invalid]")) el.removeAttribute("aria-invalid");
    const body = collect(form, kindOf());
    const id = form.dataset.id;
    const save = $("client-save", form);
    save.disabled = true;
    try {
      const card = id
        ? await api("PATCH", `/api/clients/${id}`, body, { quiet: true })
        : await api("POST", "/api/clients/full", body, { quiet: true });
      location.assign(`/clients/${card.id}`);
    } catch (err) {
      save.disabled = false;
      showFormError(form, err);
    }
  });
}

function value(form, name) {
  const el = form.querySelector(`[name="${name}"]`);
  return el ? el.value.trim() : "";
}

function collect(form, kind) {
  const body = {};
  if (!form.dataset.id) body.kind = kind;
  if (kind === "person") {
    body.first_name = value(form, "first_name") || null;
    body.last_name = value(form, "last_name") || null;
    body.company_id = value(form, "company_id") || null;
  } else {
    body.company_name = value(form, "company_name") || null;
  }
  body.phones = [...form.querySelectorAll(".phone-row")]
    .map((row) => ({ number: row.querySelector("input").value.trim(), kind: row.querySelector("select").value }))
    .filter((p) => p.number);
  body.emails = value(form, "emails").split(/[,;\s]+/).filter(Boolean);
  body.website = value(form, "website") || null;
  const address = {};
  for (const key of ["street", "postcode", "city", "region"]) address[key] = value(form, key) || null;
  address.country = value(form, "country").toUpperCase() || null;
  body.address = address;
  body.tags = [...form.querySelectorAll("input[name=tags]:checked")].map((el) => el.value);
  const fields = {};
  for (const el of form.querySelectorAll("[name=cf]")) fields[el.dataset.key] = el.value.trim() || null;
  body.custom_fields = fields;
  body.responsible_user_id = value(form, "responsible_user_id") || null;
  body.visibility = form.querySelector("input[name=visibility]:checked").value;
  body.shared_with =
    body.visibility === "private"
      ? [...form.querySelectorAll("input[name=shared_with]:checked")].map((el) => el.value)
      : [];
  return body;
}

// The field an API error names (details.path "phones.1.number", "tags.0"...).
function fieldOf(form, path) {
  const [head, index] = path.split(".");
  if (head === "phones") return form.querySelectorAll(".phone-row input")[+index] || null;
  if (head === "custom_fields") return form.querySelector(`[name=cf][data-key="${index}"]`);
  if (head === "address") return form.querySelector(`[name="${index}"]`);
  if (head === "tags") return form.querySelectorAll("input[name=tags]")[0] || null;
  if (head === "emails") return form.querySelector("[name=emails]");
  return form.querySelector(`[name="${head}"]`);
}

function showFormError(form, err) {
  const error = $("form-error", form);
  const path = (err.details && err.details.path) || "";
  const field = path ? fieldOf(form, path) : null;
  let text = err.code === "bad_request" ? t("Please check this field.") : errorText(err);
  if (err.code === "bad_request" && !field) text = t("The request was refused: please check what you entered.");
  error.textContent = text;
  error.dataset.path = path;
  error.hidden = false;
  if (field) {
    field.setAttribute("aria-invalid", "true");
    field.focus();
  }
}

// --- the card ----------------------------------------------------------------

const card = $("client-card");
if (card) wireCard(card);

function wireCard(card) {
  const id = card.dataset.id;
  let live = null;
  const liveState = $("live-state", card);
  if (card.dataset.canCall === "true") {
    live = new Live({
      onSnapshot() {},
      onResumed() {},
      onEvent() {},
      onDown() {},
      onStatus(s) {
        document.body.dataset.live = s;
        liveState.textContent = s === "online" ? "" : t("Connecting to the telephony…");
      },
    });
    live.start().catch(() => {});
  }
  card.addEventListener("click", async (e) => {
    const call = e.target.closest("[data-testid=client-call]");
    if (!call || !live) return;
    call.disabled = true;
    try {
      await live.command("call.originate", { to: call.dataset.number, client_id: id });
      toast(t("Calling {number}…", { number: call.dataset.number }), "info");
    } catch (err) {
      toast(errorText(err instanceof ApiError ? err : new ApiError(0, "internal", "")), "error");
    } finally {
      call.disabled = false;
    }
  });

  const del = $("delete-dialog", card);
  $("client-delete", card).addEventListener("click", () => del.showModal());
  del.addEventListener("close", async () => {
    if (del.returnValue !== "delete") return;
    try {
      await api("DELETE", `/api/clients/${id}`);
      location.assign("/clients");
    } catch {
      // api() showed the error.
    }
  });

  const merge = $("merge-dialog", card);
  const search = $("merge-search", merge);
  const hits = $("merge-hits", merge);
  const confirm = $("merge-confirm", merge);
  let chosen = null;
  let seq = 0;
  $("client-merge-open", card).addEventListener("click", () => {
    chosen = null;
    confirm.disabled = true;
    hits.replaceChildren();
    search.value = "";
    merge.showModal();
    search.focus();
  });
  search.addEventListener("input", async () => {
    const q = search.value.trim();
    const mine = ++seq;
    if (!q) {
      hits.replaceChildren();
      return;
    }
    const found = await api("GET", `/api/clients?q=${encodeURIComponent(q)}&per_page=10`, undefined, { quiet: true }).catch(() => null);
    if (mine !== seq || !found) return;
    hits.replaceChildren(
      ...found.clients
        .filter((c) => c.id !== id)
        .map((c) => {
          const li = document.createElement("li");
          const label = document.createElement("label");
          const radio = document.createElement("input");
          radio.type = "radio";
          radio.name = "duplicate";
          radio.value = c.id;
          radio.dataset.testid = "merge-hit";
          radio.addEventListener("change", () => {
            chosen = c.id;
            confirm.disabled = false;
          });
          label.append(radio, ` ${c.display_name}`);
          if (c.phones.length) label.append(` · ${c.phones.map((p) => p.number).join(", ")}`);
          li.append(label);
          return li;
        }),
    );
  });
  merge.addEventListener("close", async () => {
    if (merge.returnValue !== "merge" || !chosen) return;
    try {
      await api("POST", `/api/clients/${id}/merge`, { duplicate_id: chosen });
      location.reload();
    } catch {
      // api() showed the error.
    }
  });
}
