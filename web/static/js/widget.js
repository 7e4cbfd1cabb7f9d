// The agent's widget: agent state, dialpad, search, pop-ups, the call panel,
// wrap-up, the auto-dialer and the call history. Live data comes from the
// websocket (ws.js); CRM data from the JSON API and htmx partials. Every value
// from the server or the user is put in the page with textContent.
import { api, ApiError, errorText, toast } from "./api.js";
import { formatDateTime, formatDuration, loadCatalogue, localiseTimes, t } from "./i18n.js";
import { startReminders } from "./reminders.js";
import * as ring from "./ring.js";
import { Live } from "./ws.js";

const NOTE_MAX = 10000;
const COLLEAGUES_EVERY = 15000;
// Call states in the order a call goes through them; the panel never goes back.
const RANK = { created: 0, dialing: 1, ringing: 2, answered: 3, bridged: 4 };

const $ = (id) => document.querySelector(`[data-testid="${id}"]`);
const body = document.body;
const myAgents = new Set((body.dataset.agents || "").split(" ").filter(Boolean));
const wrapUpMode = body.dataset.wrapUp || "optional";

const state = {
  calls: new Map(),
  current: null,
  popups: new Map(),
  wrapup: null,
  dialer: { state: "idle", callId: null, number: null, session: null },
  colleagues: [],
  live: null,
};

window.sbPopupShownAt = window.sbPopupShownAt || {};

const tz = document.getElementById("history-tz");
if (tz) tz.value = Intl.DateTimeFormat().resolvedOptions().timeZone || "UTC";

function show(el, visible) {
  if (el) el.hidden = !visible;
}

// Whether an agent is one of this user's (a supervisor sees everyone's calls,
// but the panel, pop-ups and wrap-up are for their own).
function mine(agent) {
  return typeof agent === "string" && myAgents.has(agent);
}

function reportError(error) {
  toast(errorText(error instanceof ApiError ? error : new ApiError(0, "internal", "")), "error");
}

async function command(name, args) {
  try {
    return await state.live.command(name, args);
  } catch (error) {
    reportError(error);
    throw error;
  }
}

// --- connection ----------------------------------------------------------------

const connLabels = {
  connecting: () => t("Connecting…"),
  online: () => t("Connected"),
  reconnecting: () => t("Reconnecting…"),
};

function setConnection(connState) {
  const el = $("conn-status");
  el.dataset.state = connState;
  el.textContent = connLabels[connState]();
}

// --- agent state ---------------------------------------------------------------

const agentLabels = {
  available: () => t("Available"),
  paused: () => t("Paused"),
  offline: () => t("Offline"),
};

function setAgentState(declared, reason) {
  if (!agentLabels[declared]) return;
  const el = $("agent-state");
  el.dataset.state = declared;
  el.querySelector(".agent-label").textContent = agentLabels[declared]();
  el.querySelector(".agent-reason").textContent = declared === "paused" && reason ? `(${reason})` : "";
  for (const s of ["available", "paused", "offline"]) {
    $(`state-${s}`).setAttribute("aria-pressed", String(s === declared));
  }
}

async function loadAgentState() {
  try {
    const agents = await api("GET", "/api/agents/me", undefined, { quiet: true });
    if (agents && agents.length) setAgentState(agents[0].state, agents[0].reason);
  } catch {
    // No telephony in this process: the state stays as shown.
  }
}

async function changeState(declared, reason) {
  const agent = [...myAgents][0];
  if (!agent) {
    toast(t("Your user is not one of the configured agents."), "error");
    return;
  }
  const payload = { state: declared };
  if (reason) payload.reason = reason;
  try {
    const out = await api("PUT", `/api/agents/${encodeURIComponent(agent)}/state`, payload);
    setAgentState(out.state, out.reason);
    togglePause(false);
  } catch {
    // api() showed the error.
  }
}

function togglePause(open) {
  const box = document.getElementById("pause-box");
  box.hidden = !open;
  $("state-paused").setAttribute("aria-expanded", String(open));
  if (open) $("pause-reason").focus();
}

$("state-available").addEventListener("click", () => changeState("available"));
$("state-offline").addEventListener("click", () => changeState("offline"));
$("state-paused").addEventListener("click", () => togglePause(document.getElementById("pause-box").hidden));
$("pause-confirm").addEventListener("click", () => changeState("paused", $("pause-reason").value));
document.getElementById("pause-box").addEventListener("keydown", (e) => {
  if (e.key === "Escape") {
    togglePause(false);
    $("state-paused").focus();
  }
});

$("logout").addEventListener("click", async () => {
  try {
    await api("POST", "/api/auth/logout");
  } finally {
    location.assign("/login");
  }
});

// --- numbers -------------------------------------------------------------------

async function normalise(text) {
  return api("GET", `/api/numbers/normalize?number=${encodeURIComponent(text)}`, undefined, {
    quiet: true,
  });
}

function describeNumber(n) {
  if (n.kind === "extension") {
    return n.agent
      ? t("extension {extension} — {name}", { extension: n.extension, name: n.agent })
      : t("extension {extension}", { extension: n.extension });
  }
  return n.display;
}

async function originate(to, extra = {}) {
  if (state.wrapup && wrapUpMode === "required") {
    toast(t("Finish the wrap-up of the last call first."), "error");
    return;
  }
  const args = { to, ...extra };
  try {
    await command("call.originate", args);
    toast(t("Calling {number}…", { number: displayNow(to) }), "info");
  } catch {
    // command() showed the error.
  }
}

// --- dialpad -------------------------------------------------------------------

let previewTimer = null;
let previewSeq = 0;
const dialInput = $("dial-input");

function dialError(text) {
  const el = $("dial-error");
  el.textContent = text || "";
  el.hidden = !text;
}

dialInput.addEventListener("input", () => {
  dialError("");
  clearTimeout(previewTimer);
  const text = dialInput.value.trim();
  if (!text) {
    $("dial-preview").textContent = "";
    return;
  }
  previewTimer = setTimeout(async () => {
    const mySeq = ++previewSeq;
    try {
      const n = await normalise(text);
      if (mySeq === previewSeq) $("dial-preview").textContent = describeNumber(n);
    } catch {
      if (mySeq === previewSeq) $("dial-preview").textContent = "";
    }
  }, 250);
});

document.getElementById("dial-form").addEventListener("submit", async (event) => {
  event.preventDefault();
  const text = dialInput.value.trim();
  if (!text) {
    dialError(t("Type a number or an extension."));
    dialInput.focus();
    return;
  }
  let n;
  try {
    n = await normalise(text);
  } catch (error) {
    dialError(
      error.code === "bad_request"
        ? t("This is not a phone number or an extension: check the digits.")
        : errorText(error),
    );
    dialInput.focus();
    return;
  }
  dialError("");
  if (n.kind === "number") displayed.set(n.e164, n.display);
  $("dial-preview").textContent = describeNumber(n);
  await originate(n.kind === "extension" ? n.extension : n.e164);
});

// --- search and history (htmx partials) -----------------------------------------

document.addEventListener("click", (event) => {
  const target = event.target instanceof Element ? event.target : null;
  if (!target) return;
  const searchCall = target.closest("[data-testid=search-call]");
  if (searchCall) {
    const extra = {};
    if (searchCall.dataset.kind === "client") extra.client_id = searchCall.dataset.id;
    if (searchCall.dataset.kind === "lead") extra.lead_id = searchCall.dataset.id;
    originate(searchCall.dataset.number, extra);
    return;
  }
  const callback = target.closest("[data-testid=history-callback]");
  if (callback) {
    event.stopPropagation();
    originate(callback.dataset.number);
  }
}, true);

document.body.addEventListener("htmx:afterSwap", (e) => localiseTimes(e.detail.target.parentNode || e.detail.target));
document.body.addEventListener("htmx:responseError", (e) => {
  const xhr = e.detail.xhr;
  let code = "internal";
  try {
    code = JSON.parse(xhr.responseText).error.code;
  } catch {
    // Not one of our JSON errors.
  }
  if (xhr.status === 401) location.assign(`/login?next=${encodeURIComponent(location.pathname)}`);
  else toast(errorText(new ApiError(xhr.status, code, "")), "error");
});
document.body.addEventListener("htmx:sendError", () => toast(errorText(new ApiError(0, "network", "")), "error"));

function refreshHistory() {
  document.body.dispatchEvent(new Event("sb-refresh"));
}

// --- calls ---------------------------------------------------------------------

function callOf(id) {
  let call = state.calls.get(id);
  if (!call) {
    call = {
      id,
      rank: -1,
      base: "created",
      held: false,
      consulting: false,
      ended: false,
      answeredAt: null,
      startedAt: Date.now(),
      direction: null,
      from: null,
      to: null,
      card: null,
      // Whether the card is known (from call.ringing): a call known only from a
      // snapshot is not said to be from an unknown number.
      cardKnown: false,
      agent: null,
      dialer: false,
      talked: false,
    };
    state.calls.set(id, call);
  }
  return call;
}

function advance(call, base) {
  const rank = RANK[base];
  if (rank > call.rank) {
    call.rank = rank;
    call.base = base;
  }
}

function displayState(call) {
  if (call.ended) return "ended";
  if (call.consulting) return "consulting";
  if (call.held) return "held";
  return call.base === "created" ? "dialing" : call.base;
}

const stateLabels = {
  dialing: () => t("Dialling"),
  ringing: () => t("Ringing"),
  answered: () => t("Answered"),
  bridged: () => t("In call"),
  held: () => t("On hold"),
  consulting: () => t("Consulting a colleague"),
  ended: () => t("Ended"),
};

function customerNumber(call) {
  return call.direction === "inbound" ? call.from : call.to;
}

// Numbers as people read them (+33 6 12 34 56 78), by the server's rules
// (GET /api/numbers/normalize): asked once per number, kept for the page's life.
const displayForms = new Map(); // number -> Promise of its display form
const displayed = new Map(); // number -> its display form, once known
const shownIn = new WeakMap(); // element -> the number it shows

function displayForm(number) {
  if (!number || !number.startsWith("+")) return Promise.resolve(number || "");
  let found = displayForms.get(number);
  if (!found) {
    found = normalise(number).then(
      (n) => {
        const text = n.kind === "number" ? n.display : number;
        displayed.set(number, text);
        return text;
      },
      () => {
        displayForms.delete(number); // asked again on the next render
        return number;
      },
    );
    displayForms.set(number, found);
  }
  return found;
}

// The display form if already known, else the number as it is.
function displayNow(number) {
  return displayed.get(number) || number || "";
}

// Shows ``number`` in ``el`` in its display form (at once when known, else as
// soon as the server has said it); the element's data attributes stay raw.
function showNumber(el, number) {
  shownIn.set(el, number);
  el.textContent = displayNow(number);
  if (number && !displayed.has(number)) {
    displayForm(number).then((text) => {
      if (shownIn.get(el) === number) el.textContent = text;
    });
  }
}

function renderPanel() {
  const panel = $("call-panel");
  const call = state.current ? state.calls.get(state.current) : null;
  if (!call) {
    panel.hidden = true;
    panel.dataset.state = "idle";
    return;
  }
  panel.hidden = false;
  const shown = displayState(call);
  if (panel.dataset.callId !== call.id) {
    panel.dataset.callId = call.id;
    $("dtmf-sent").textContent = "";
    $("call-note").value = "";
    $("call-note-status").dataset.state = "";
    $("call-note-status").textContent = "";
    $("transfer-status").dataset.state = "";
    $("transfer-status").textContent = "";
    showTransfer(false);
  }
  panel.dataset.state = shown;
  showNumber($("call-number"), customerNumber(call));
  $("call-state-label").textContent = stateLabels[shown]();
  $("call-card").textContent = call.card && !call.card.created ? call.card.display_name : "";
  show($("call-answer"), shown === "ringing" && call.direction === "inbound");
  $("call-hold").textContent = call.held ? t("Resume") : t("Hold");
  const live = !call.ended;
  for (const id of ["call-hold", "call-transfer", "call-hangup"]) $(id).disabled = !live;
  for (const el of panel.querySelectorAll(".keypad button")) el.disabled = !live;
  $("call-note").disabled = false;
  const consulting = call.consulting;
  show($("transfer-complete"), consulting);
  show($("transfer-cancel"), consulting);
  tick();
}

function tick() {
  const call = state.current ? state.calls.get(state.current) : null;
  if (!call) return;
  const from = call.answeredAt || call.startedAt;
  const until = call.endedAt || Date.now();
  $("call-timer").textContent = formatDuration((until - from) / 1000);
}
setInterval(tick, 1000);

function focusCall(id) {
  if (state.current && state.current !== id) {
    const old = state.calls.get(state.current);
    if (old && !old.ended) return; // one live call at a time in the panel
  }
  state.current = id;
  renderPanel();
}

function pickNextCall() {
  for (const [id, call] of state.calls) {
    if (!call.ended && mine(call.agent)) {
      state.current = id;
      renderPanel();
      return;
    }
  }
}

function applyCallEvent(type, at, d) {
  const id = d.call_id;
  if (!id) return;
  const call = callOf(id);
  if (call.ended && type !== "recording.ready") return; // a late or repeated event
  if (d.agent !== undefined && d.agent !== null) call.agent = d.agent;
  const when = at ? Date.parse(at) : Date.now();
  switch (type) {
    case "call.created":
      call.direction = d.direction;
      call.from = d.from_number;
      call.to = d.to_number;
      advance(call, "created");
      if (d.direction !== "inbound" && mine(call.agent)) focusCall(id);
      break;
    case "call.dialing":
      advance(call, "dialing");
      break;
    case "call.ringing":
      if (d.direction) call.direction = d.direction;
      if (d.from_number) call.from = d.from_number;
      if (d.to_number) call.to = d.to_number;
      if ("card" in d) {
        call.card = d.card || null;
        call.cardKnown = true;
      }
      advance(call, "ringing");
      if (d.leg === "agent" && d.direction === "inbound" && mine(d.agent)) {
        showPopup(call);
        focusCall(id);
      }
      if (state.dialer.callId === id) renderDialerCard();
      break;
    case "call.answered":
      advance(call, "answered");
      if (!call.answeredAt) call.answeredAt = when;
      if (d.leg === "agent" || call.direction !== "inbound") closePopup(id, true);
      if (call.direction === "inbound" && d.leg === "agent" && mine(call.agent)) focusCall(id);
      break;
    case "call.bridged":
      advance(call, "bridged");
      call.talked = true;
      call.answeredAt = call.answeredAt || when;
      closePopup(id, true);
      if (mine(call.agent)) focusCall(id);
      break;
    case "call.held":
      call.held = !!d.held;
      break;
    case "call.transferred":
      setTransferStatus(d.state, d.target, d.reason);
      call.consulting = d.state === "consulting";
      break;
    case "call.ended":
      call.ended = true;
      call.endedAt = when;
      call.held = false;
      call.consulting = false;
      closePopup(id, true);
      ring.stop(id);
      onCallEnded(call);
      break;
    default:
      break;
  }
  if (state.current === id) renderPanel();
}

function onCallEnded(call) {
  refreshHistory();
  const forMe = mine(call.agent);
  const needsWrapUp = forMe && call.talked && (call.dialer || wrapUpMode !== "off");
  if (needsWrapUp) openWrapUp(call);
  if (state.dialer.callId === call.id) {
    state.dialer.callId = null;
    state.dialer.number = null;
    renderDialerCard();
  }
  if (state.current === call.id) {
    renderPanel();
    setTimeout(() => {
      if (state.current === call.id && call.ended) {
        state.current = null;
        state.calls.delete(call.id);
        pickNextCall();
        renderPanel();
      }
    }, 4000);
  } else {
    state.calls.delete(call.id);
  }
}

// --- pop-up --------------------------------------------------------------------

const popupTemplate = document.getElementById("tpl-popup");

function fillList(list, items, text) {
  list.replaceChildren();
  for (const item of items) {
    const li = document.createElement("li");
    li.textContent = text(item);
    list.append(li);
  }
}

// A list under its heading; both hidden while the list is empty.
function fillSection(root, name, items, text) {
  const list = root.querySelector(`[data-testid=${name}]`);
  fillList(list, items, text);
  list.hidden = items.length === 0;
  show(root.querySelector(`[data-testid=${name}-heading]`), items.length > 0);
}

const directionLabels = {
  inbound: () => t("Inbound"),
  outbound: () => t("Outbound"),
  internal: () => t("Internal"),
};

// "12/01/2026, 10:00 · Inbound · Missed" or "… · Outbound · callback".
function lastCallText(c) {
  const parts = [formatDateTime(c.created_at)];
  if (directionLabels[c.direction]) parts.push(directionLabels[c.direction]());
  if (c.missed) parts.push(t("Missed"));
  if (c.disposition) parts.push(c.disposition);
  return parts.join(" · ");
}

function taskText(task) {
  return task.due_at
    ? t("{title} · due {when}", { title: task.title, when: formatDateTime(task.due_at) })
    : task.title;
}

function isUnknown(card) {
  return !card || (card.kind === "lead" && card.created === true);
}

function fillCard(root, card) {
  // A private client's card on the websocket names no one: the HTTP card fills
  // it in for those who may open it.
  root.querySelector("[data-testid=card-name]").textContent =
    card.display_name || (card.private ? t("Private client") : "");
  root.querySelector("[data-testid=card-company]").textContent = card.company || "";
  const responsible = card.responsible ? card.responsible.display_name : "";
  root.querySelector("[data-testid=card-responsible]").textContent = responsible
    ? t("Responsible: {name}", { name: responsible })
    : "";
  fillList(root.querySelector("[data-testid=card-tags]"), card.tags || [], (x) => x);
  fillSection(root, "card-last-calls", card.last_calls || [], lastCallText);
  fillSection(root, "card-tasks", card.open_tasks || [], taskText);
}

async function fullCard(kind, id) {
  const path = kind === "client" ? `/api/clients/${id}` : `/api/leads/${id}`;
  return api("GET", path, undefined, { quiet: true });
}

function showPopup(call) {
  let el = state.popups.get(call.id);
  const fresh = !el;
  if (fresh) {
    el = popupTemplate.content.firstElementChild.cloneNode(true);
    el.dataset.callId = call.id;
    el.setAttribute("aria-label", t("Incoming call"));
    el.querySelector(".popup-label").textContent = t("Incoming call");
    el.querySelector("[data-testid=popup-answer]").textContent = t("Answer");
    el.querySelector("[data-testid=popup-create-lead]").textContent = t("Create lead");
    el.querySelector("[data-testid=popup-create-client]").textContent = t("Create client");
    el.querySelector("[data-testid=popup-contact-save]").textContent = t("Save contact");
    const nameInput = el.querySelector("[data-testid=popup-contact-name]");
    nameInput.placeholder = t("Name");
    nameInput.setAttribute("aria-label", t("Name"));
    wirePopup(el, call.id);
    document.getElementById("popups").append(el);
    window.sbPopupShownAt[call.id] = performance.timeOrigin + performance.now();
    const ringsHere = ring.isLeader();
    el.dataset.ringing = ringsHere ? "true" : "false";
    if (ringsHere && !ring.start(call.id)) el.classList.add("flash");
    state.popups.set(call.id, el);
  }
  showNumber(el.querySelector("[data-testid=popup-number]"), call.from);
  renderPopupCard(el, call.card, call.cardKnown);
  // Focus the answer button, unless the agent is typing somewhere.
  const busy = document.activeElement && document.activeElement !== document.body;
  if (fresh && !busy) el.querySelector("[data-testid=popup-answer]").focus({ preventScroll: true });
}

function renderPopupCard(el, card, known = true) {
  const unknown = known && isUnknown(card);
  const unknownEl = el.querySelector("[data-testid=popup-unknown]");
  unknownEl.hidden = !unknown;
  unknownEl.textContent = unknown ? t("Unknown number") : "";
  const cardEl = el.querySelector("[data-testid=popup-card]");
  show(el.querySelector("[data-testid=popup-create-lead]"), unknown);
  show(el.querySelector("[data-testid=popup-create-client]"), unknown);
  if (unknown || !card) {
    cardEl.hidden = true;
    return;
  }
  cardEl.hidden = false;
  fillCard(cardEl, card);
  if (card.id && !card.last_calls) {
    fullCard(card.kind, card.id)
      .then((full) => {
        if (state.popups.get(el.dataset.callId) === el) fillCard(cardEl, full);
      })
      .catch(() => {});
  }
}

function wirePopup(el, callId) {
  const form = el.querySelector(".popup-contact");
  let kind = "lead";
  el.querySelector("[data-testid=popup-answer]").addEventListener("click", async () => {
    ring.stop(callId);
    try {
      await command("call.answer", { call_id: callId });
      closePopup(callId, true);
    } catch {
      // command() showed the error.
    }
  });
  for (const which of ["lead", "client"]) {
    el.querySelector(`[data-testid=popup-create-${which}]`).addEventListener("click", () => {
      kind = which;
      form.hidden = false;
      form.querySelector("input").focus();
    });
  }
  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    const name = form.querySelector("input").value.trim();
    if (!name) {
      toast(t("Type the contact's name."), "error");
      return;
    }
    const body = kind === "lead" ? { name } : { display_name: name };
    try {
      const card = await api("POST", `/api/calls/${callId}/${kind}`, body);
      form.hidden = true;
      const call = state.calls.get(callId);
      if (call) {
        call.card = { ...card, created: false };
        call.cardKnown = true;
      }
      renderPopupCard(el, { ...card, created: false });
      if (state.current === callId) renderPanel();
      toast(t("Contact saved."), "info");
    } catch {
      // api() showed the error.
    }
  });
  form.addEventListener("keydown", (e) => {
    if (e.key === "Escape") form.hidden = true;
  });
}

function closePopup(callId, announce) {
  const el = state.popups.get(callId);
  ring.stop(callId);
  if (el) {
    el.remove();
    state.popups.delete(callId);
  }
  if (announce) ring.announceClose(callId);
}

ring.onRemoteClose((callId) => closePopup(callId, false));

// --- call panel buttons ------------------------------------------------------------

function currentId() {
  return state.current;
}

$("call-answer").addEventListener("click", () => command("call.answer", { call_id: currentId() }).catch(() => {}));
$("call-hangup").addEventListener("click", () => command("call.hangup", { call_id: currentId() }).catch(() => {}));
$("call-hold").addEventListener("click", () => {
  const call = state.calls.get(currentId());
  if (!call) return;
  command(call.held ? "call.resume" : "call.hold", { call_id: call.id }).catch(() => {});
});
for (const key of document.querySelectorAll(".keypad button")) {
  key.addEventListener("click", async () => {
    const digit = key.dataset.digit;
    try {
      await command("call.dtmf", { call_id: currentId(), digits: digit });
      $("dtmf-sent").textContent += digit;
    } catch {
      // command() showed the error.
    }
  });
}

// Note: saved as typed (debounced), never over the limit.
let noteTimer = null;
$("call-note").addEventListener("input", () => {
  clearTimeout(noteTimer);
  const status = $("call-note-status");
  const text = $("call-note").value;
  const callId = currentId();
  if (text.length > NOTE_MAX) {
    status.dataset.state = "error";
    status.textContent = t("Not saved");
    toast(t("The note is too long: at most {limit} characters.", { limit: NOTE_MAX }), "error");
    return;
  }
  status.dataset.state = "saving";
  status.textContent = t("Saving…");
  noteTimer = setTimeout(async () => {
    try {
      await command("call.note", { call_id: callId, text });
      if (currentId() === callId) {
        status.dataset.state = "saved";
        status.textContent = t("Saved");
      }
    } catch {
      status.dataset.state = "error";
      status.textContent = t("Not saved");
    }
  }, 600);
});

// --- transfer --------------------------------------------------------------------

function showTransfer(open) {
  $("transfer-panel").hidden = !open;
  $("call-transfer").setAttribute("aria-expanded", String(open));
  if (open) {
    loadColleagues();
    $("transfer-to").focus();
  }
}

const transferLabels = {
  started: () => t("Transfer started"),
  consulting: () => t("Talking with the colleague"),
  completed: () => t("Transfer completed"),
  failed: () => t("Transfer failed"),
};

function setTransferStatus(s, target, reason) {
  const el = $("transfer-status");
  el.dataset.state = s;
  const label = transferLabels[s] ? transferLabels[s]() : s;
  el.textContent = [label, target ? `(${target})` : "", reason || ""].filter(Boolean).join(" ");
}

$("call-transfer").addEventListener("click", () => showTransfer($("transfer-panel").hidden));
$("transfer-panel").addEventListener("keydown", (e) => {
  if (e.key === "Escape") {
    showTransfer(false);
    $("call-transfer").focus();
  }
});

async function transfer(mode) {
  const to = $("transfer-to").value.trim();
  if (!to) {
    toast(t("Choose a colleague or type a number."), "error");
    $("transfer-to").focus();
    return;
  }
  setTransferStatus("started", to, "");
  try {
    await command("call.transfer", { call_id: currentId(), to, mode });
  } catch {
    setTransferStatus("failed", to, "");
  }
}

$("transfer-blind").addEventListener("click", () => transfer("blind"));
$("transfer-attended").addEventListener("click", () => transfer("attended"));
$("transfer-complete").addEventListener("click", () =>
  command("call.transfer.complete", { call_id: currentId() }).catch(() => {}),
);
$("transfer-cancel").addEventListener("click", () =>
  command("call.transfer.cancel", { call_id: currentId() }).catch(() => {}),
);

const presenceLabels = {
  available: () => t("available"),
  paused: () => t("paused"),
  offline: () => t("offline"),
};

async function loadColleagues() {
  let list;
  try {
    list = await api("GET", "/api/colleagues", undefined, { quiet: true });
  } catch {
    return;
  }
  state.colleagues = list;
  const ul = $("transfer-colleagues");
  ul.replaceChildren();
  for (const c of list) {
    if (myAgents.has(c.agent)) continue;
    const li = document.createElement("li");
    const button = document.createElement("button");
    button.type = "button";
    button.dataset.testid = "transfer-colleague";
    button.dataset.agent = c.agent;
    button.dataset.extension = c.extension;
    button.dataset.state = c.on_call ? "busy" : c.state;
    const presence = c.on_call ? t("on a call") : (presenceLabels[c.state] || (() => c.state))();
    button.textContent = `${c.display_name} · ${c.extension} · ${presence}`;
    button.classList.add(`presence-${button.dataset.state}`);
    button.addEventListener("click", () => {
      $("transfer-to").value = c.extension;
      $("transfer-to").focus();
    });
    li.append(button);
    ul.append(li);
  }
}
setInterval(() => {
  if (!$("transfer-panel").hidden) loadColleagues();
}, COLLEAGUES_EVERY);

// --- wrap-up ----------------------------------------------------------------------

function openWrapUp(call) {
  state.wrapup = { callId: call.id };
  const el = $("wrapup");
  el.dataset.callId = call.id;
  showNumber($("wrapup-for"), customerNumber(call));
  $("wrapup-disposition").value = "";
  $("wrapup-note").value = $("call-note").value;
  $("wrapup-followup").checked = false;
  $("wrapup-followup-fields").hidden = true;
  $("wrapup-followup-title").value = "";
  $("wrapup-followup-due").value = "";
  wrapUpError("");
  el.hidden = false;
  $("wrapup-disposition").focus({ preventScroll: true });
}

function closeWrapUp() {
  state.wrapup = null;
  $("wrapup").hidden = true;
}

function wrapUpError(text) {
  $("wrapup-error").textContent = text;
  $("wrapup-error").hidden = !text;
}

$("wrapup-followup").addEventListener("change", () => {
  $("wrapup-followup-fields").hidden = !$("wrapup-followup").checked;
});

$("wrapup-save").addEventListener("click", async () => {
  if (!state.wrapup) return;
  const disposition = $("wrapup-disposition").value;
  const note = $("wrapup-note").value;
  if (!disposition) {
    wrapUpError(t("Choose the call's outcome."));
    $("wrapup-disposition").focus();
    return;
  }
  if (note.length > NOTE_MAX) {
    wrapUpError(t("The note is too long: at most {limit} characters.", { limit: NOTE_MAX }));
    return;
  }
  const payload = { disposition };
  if (note.trim()) payload.note = note;
  if ($("wrapup-followup").checked) {
    const title = $("wrapup-followup-title").value.trim();
    const due = $("wrapup-followup-due").value;
    const dueAt = due ? new Date(due) : null;
    if (!title || !dueAt || Number.isNaN(dueAt.getTime())) {
      wrapUpError(t("A follow-up task needs a title and a due date."));
      return;
    }
    payload.follow_up = { title, due_at: dueAt.toISOString() };
  }
  wrapUpError("");
  try {
    await api("POST", `/api/calls/${state.wrapup.callId}/disposition`, payload, { quiet: true });
    closeWrapUp();
    toast(t("Wrap-up saved."), "info");
    refreshHistory();
  } catch (error) {
    wrapUpError(errorText(error));
  }
});

const skip = $("wrapup-skip");
if (skip) skip.addEventListener("click", closeWrapUp);

// --- dialer -------------------------------------------------------------------------

const dialerLabels = {
  idle: () => t("Idle"),
  running: () => t("Running"),
  paused: () => t("Paused"),
  finished: () => t("Finished"),
  stopped: () => t("Stopped"),
};

function setDialerState(s) {
  state.dialer.state = s;
  const el = $("dialer-state");
  el.dataset.state = s;
  el.textContent = dialerLabels[s]();
  const active = s === "running" || s === "paused";
  show($("dialer-start"), !active);
  show($("dialer-pause"), s === "running");
  show($("dialer-resume"), s === "paused");
  show($("dialer-skip"), active);
  show($("dialer-stop"), active);
  $("dialer-list").disabled = active;
}

function setDialerProgress(d) {
  const el = $("dialer-progress");
  if (typeof d.dialed !== "number") return;
  el.dataset.done = String(d.dialed);
  el.dataset.left = String(d.remaining);
  el.dataset.answered = String(d.answered);
  el.textContent = t("{done} dialled, {left} left, {answered} answered", {
    done: d.dialed,
    left: d.remaining,
    answered: d.answered,
  });
}

// The customer a dialer call is for, looked up once per number among the
// contacts by their phone (null when none has it).
const dialerContacts = new Map(); // number -> Promise of a hit or null

function contactOf(number) {
  let found = dialerContacts.get(number);
  if (!found) {
    found = api("GET", `/api/contacts/search?q=${encodeURIComponent(number)}&limit=5`, undefined, {
      quiet: true,
    }).then(
      (found) =>
        found.results.find((h) => (h.phones || []).some((p) => p.number === number)) || null,
      () => {
        dialerContacts.delete(number);
        return undefined; // not known: neither a name nor "Unknown number"
      },
    );
    dialerContacts.set(number, found);
  }
  return found;
}

function renderDialerCard() {
  const el = $("dialer-card");
  const callId = state.dialer.callId;
  const number = state.dialer.number;
  if (!callId && !number) {
    el.hidden = true;
    el.replaceChildren();
    delete el.dataset.number;
    return;
  }
  const call = callId ? state.calls.get(callId) : null;
  const card = call && call.card && !isUnknown(call.card) ? call.card : null;
  el.dataset.number = number || "";
  el.hidden = false;
  if (card) {
    fillDialerCard(el, number, card);
    return;
  }
  fillDialerCard(el, number, null, false);
  if (!number) return;
  contactOf(number).then((hit) => {
    if (state.dialer.number !== number || hit === undefined) return;
    const now = state.dialer.callId ? state.calls.get(state.dialer.callId) : null;
    if (now && now.card && !isUnknown(now.card)) return; // the call's own card came first
    fillDialerCard(el, number, hit, hit === null);
  });
}

// Name (and company) over the number; an unknown customer: the number once,
// then "Unknown number".
function fillDialerCard(el, number, card, unknown) {
  el.replaceChildren();
  const head = document.createElement("strong");
  if (card) {
    head.textContent = card.display_name || "";
    el.append(head);
    if (card.company) {
      const company = document.createElement("span");
      company.textContent = ` · ${card.company}`;
      el.append(company);
    }
    const line = document.createElement("div");
    line.dataset.testid = "dialer-card-number";
    showNumber(line, number);
    el.append(line);
    return;
  }
  head.dataset.testid = "dialer-card-number";
  showNumber(head, number);
  el.append(head);
  if (unknown) {
    const note = document.createElement("div");
    note.className = "dialer-unknown";
    note.dataset.testid = "dialer-card-unknown";
    note.textContent = t("Unknown number");
    el.append(note);
  }
}

function applyDialerEvent(type, d) {
  if (!mine(d.agent)) return;
  setDialerProgress(d);
  switch (type) {
    case "dialer.session.started":
    case "dialer.session.resumed":
      state.dialer.session = d.session_id;
      setDialerState("running");
      break;
    case "dialer.session.paused":
      setDialerState("paused");
      break;
    case "dialer.session.stopped":
      setDialerState("stopped");
      loadCallLists();
      state.dialer.number = null;
      renderDialerCard();
      break;
    case "dialer.session.finished":
      setDialerState("finished");
      loadCallLists();
      state.dialer.number = null;
      renderDialerCard();
      break;
    case "dialer.dialing":
      state.dialer.callId = d.call_id;
      state.dialer.number = d.number;
      callOf(d.call_id).dialer = true;
      renderDialerCard();
      break;
    case "dialer.item.claimed":
      state.dialer.number = d.number;
      renderDialerCard();
      break;
    case "dialer.result":
      if (d.call_id && state.calls.has(d.call_id)) state.calls.get(d.call_id).dialer = true;
      break;
    default:
      break;
  }
}

async function loadCallLists() {
  let lists;
  try {
    lists = await api("GET", "/api/call-lists", undefined, { quiet: true });
  } catch {
    return;
  }
  const select = $("dialer-list");
  const chosen = select.value;
  select.replaceChildren();
  if (lists.length === 0) {
    const option = document.createElement("option");
    option.value = "";
    option.textContent = t("No call list");
    select.append(option);
  }
  for (const l of lists) {
    const option = document.createElement("option");
    option.value = l.id;
    option.textContent = t("{name} ({left} left)", { name: l.name, left: l.left });
    select.append(option);
  }
  if (chosen) select.value = chosen;
  $("dialer-start").disabled = lists.length === 0;
}

$("dialer-start").addEventListener("click", () => {
  const id = $("dialer-list").value;
  if (!id) return;
  command("dialer.start", { call_list_id: id }).catch(() => {});
});
for (const name of ["pause", "resume", "skip", "stop"]) {
  $(`dialer-${name}`).addEventListener("click", () => command(`dialer.${name}`, {}).catch(() => {}));
}

// --- live data ----------------------------------------------------------------------

function applySnapshot(snapshot) {
  // A snapshot replaces what was known (after a restart of the gateway, too).
  const before = new Map(state.calls);
  state.calls.clear();
  for (const c of snapshot.calls || []) {
    const call = callOf(c.call_id);
    const known = before.get(c.call_id);
    if (known) {
      call.card = known.card;
      call.cardKnown = known.cardKnown;
      call.dialer = known.dialer;
    }
    call.direction = c.direction;
    call.from = c.from_number;
    call.to = c.to_number;
    call.agent = c.agent;
    const s = c.state;
    if (s === "held") {
      advance(call, "bridged");
      call.held = true;
    } else if (s in RANK) {
      advance(call, s);
    } else {
      advance(call, "dialing");
    }
    if (call.rank >= RANK.answered) {
      call.talked = call.rank >= RANK.bridged;
      call.answeredAt = Date.parse(c.updated_at) || Date.now();
    }
    call.startedAt = Date.parse(c.created_at) || Date.now();
  }
  for (const id of before.keys()) {
    if (!state.calls.has(id)) closePopup(id, false);
  }
  for (const [id] of state.popups) {
    const call = state.calls.get(id);
    if (!call || call.rank >= RANK.answered) closePopup(id, false);
  }
  for (const [id, call] of state.calls) {
    if (!mine(call.agent)) continue;
    if (call.base === "ringing" && call.direction === "inbound") showPopup(call);
    if (!state.current || !state.calls.has(state.current)) state.current = id;
  }
  if (state.current && !state.calls.has(state.current)) state.current = null;
  for (const a of snapshot.agents || []) {
    if (myAgents.has(a.agent)) setAgentState(a.state, a.reason);
  }
  for (const d of snapshot.dialer || []) {
    if (d.state) setDialerState(d.state);
    setDialerProgress(d);
  }
  renderPanel();
  loadAgentState();
  body.dataset.ready = "true";
}

function applyEvent(event) {
  const type = event.type;
  const d = event.data || {};
  if (type.startsWith("call.") || type === "recording.ready") {
    if (type === "call.dtmf" || type === "call.supervised") return;
    applyCallEvent(type, event.at, d);
  } else if (type === "agent.state") {
    if (myAgents.has(d.agent)) setAgentState(d.state, d.reason);
    if (!$("transfer-panel").hidden) loadColleagues();
  } else if (type.startsWith("dialer.")) {
    applyDialerEvent(type, d);
  }
}

async function main() {
  await loadCatalogue(body.dataset.lang);
  setConnection("connecting");
  setDialerState("idle");
  localiseTimes(document);
  state.live = new Live({
    onStatus: setConnection,
    onSnapshot: applySnapshot,
    onResumed: () => {
      body.dataset.ready = "true";
    },
    onEvent: applyEvent,
    onDown: () => {
      body.dataset.ready = "false";
    },
  });
  loadCallLists();
  loadAgentState();
  startReminders();
  try {
    await state.live.start();
  } catch {
    setConnection("reconnecting");
  }
}

main();
