// One tab rings: the tab holding the "switchboard-ring" Web Lock is the leader
// (the lock passes to another tab when it closes). Pop-ups are closed in every
// tab through the BroadcastChannel "switchboard-ring". The ring is WebAudio,
// started only after a user gesture (autoplay rules); without it, a visual cue.
const tabId = Math.random().toString(36).slice(2);
const channel = "BroadcastChannel" in window ? new BroadcastChannel("switchboard-ring") : null;
let leader = false;
let audio = null;
let ringing = null; // { callId, stop }
const listeners = [];

if (navigator.locks && navigator.locks.request) {
  navigator.locks.request("switchboard-ring", () => {
    leader = true;
    // Held for the tab's life.
    return new Promise(() => {});
  });
} else {
  // No Web Locks: every tab may ring (better twice than never).
  leader = true;
}

function unlockAudio() {
  try {
    const Context = window.AudioContext || window.webkitAudioContext;
    if (!Context) return;
    if (!audio) audio = new Context();
    if (audio.state === "suspended") audio.resume();
  } catch {
    audio = null;
  }
}
for (const type of ["pointerdown", "keydown"]) {
  window.addEventListener(type, unlockAudio, { capture: true });
}

if (channel) {
  channel.addEventListener("message", (e) => {
    const msg = e.data || {};
    if (msg.type === "close" && typeof msg.callId === "string") {
      if (ringing && ringing.callId === msg.callId) stop(msg.callId);
      for (const fn of listeners) fn(msg.callId);
    }
  });
}

export function isLeader() {
  return leader;
}

export function onRemoteClose(fn) {
  listeners.push(fn);
}

// Tell the other tabs to close the pop-up of callId (answered or ended here).
export function announceClose(callId) {
  if (channel) channel.postMessage({ type: "close", callId, from: tabId });
}

// Ring for callId in this tab; returns whether a sound plays (else: visual cue only).
export function start(callId) {
  if (ringing) stop(ringing.callId);
  if (!audio || audio.state !== "running") {
    ringing = { callId, stop: () => {} };
    return false;
  }
  const gain = audio.createGain();
  gain.gain.value = 0;
  gain.connect(audio.destination);
  const oscillators = [440, 480].map((f) => {
    const o = audio.createOscillator();
    o.frequency.value = f;
    o.connect(gain);
    o.start();
    return o;
  });
  // 2 s on, 4 s off, scheduled on the audio clock (ten minutes at most).
  const scheduleUntil = audio.currentTime + 600;
  for (let at = audio.currentTime; at < scheduleUntil; at += 6) {
    gain.gain.setValueAtTime(0.08, at);
    gain.gain.setValueAtTime(0, at + 2);
  }
  ringing = {
    callId,
    stop: () => {
      for (const o of oscillators) o.stop();
      gain.disconnect();
    },
  };
  return true;
}

export function stop(callId) {
  if (!ringing || (callId && ringing.callId !== callId)) return;
  ringing.stop();
  ringing = null;
}
