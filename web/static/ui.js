// The page: connection badge, messages, controls and the grid of tiles.
// Nothing here speaks to the server.

export const $ = (id) => document.getElementById(id);

const STATE_TEXT = {
  idle: 'not connected',
  connecting: 'connecting…',
  connected: 'connected',
  reconnecting: 'reconnecting…',
  disconnected: 'disconnected',
};

export function setState(state, text) {
  const el = $('conn-state');
  el.dataset.state = state;
  el.textContent = text || STATE_TEXT[state] || state;
}

// showMessage shows one message; kind 'error' or 'info'. An empty text hides it.
export function showMessage(text, kind = 'error') {
  const el = $('message');
  el.textContent = text || '';
  el.classList.toggle('info', kind === 'info');
  el.hidden = !text;
}

// ---- tiles ---------------------------------------------------------------

// A tile shows one participant's camera and microphone (source "camera") or
// one screen share (source "screen"). Its <video> carries the whole stream,
// so remote audio plays from it too.
const tiles = new Map(); // key -> tile

export function tileKey(psid, source) {
  return `${psid}|${source}`;
}

export function getTile(key) {
  return tiles.get(key);
}

export function allTiles() {
  return [...tiles.values()];
}

export function ensureTile(key, { psid, identity = '', name = '', source = 'camera', local = false }) {
  let t = tiles.get(key);
  if (t) {
    setTileIdentity(t, { psid, identity, name });
    return t;
  }
  const el = document.createElement('figure');
  el.className = 'tile' + (local ? ' local' : '');
  el.dataset.source = source;
  const video = document.createElement('video');
  video.autoplay = true;
  video.playsInline = true;
  video.muted = local; // never play our own microphone back
  const stream = new MediaStream();
  video.srcObject = stream;
  const novideo = document.createElement('div');
  novideo.className = 'novideo';
  const label = document.createElement('figcaption');
  label.className = 'label';
  const flags = document.createElement('div');
  flags.className = 'flags';
  el.append(video, novideo, label, flags);
  t = { key, el, video, stream, novideo, label, flags, local, source, videoMuted: false, audioMuted: false };
  setTileIdentity(t, { psid, identity, name });
  // Screens after cameras, local camera first.
  const grid = $('tiles');
  if (local && source === 'camera') grid.prepend(el);
  else grid.append(el);
  tiles.set(key, t);
  refreshTile(t);
  markSpeaker(t);
  return t;
}

function setTileIdentity(t, { psid, identity, name }) {
  if (psid) t.el.dataset.participantSid = psid;
  if (identity) t.el.dataset.identity = identity;
  const shown = name || identity || t.el.dataset.identity || '?';
  t.name = shown;
  let text = shown;
  if (t.source === 'screen') text += ' · screen';
  if (t.local) text += ' (you)';
  t.label.textContent = text;
  t.novideo.textContent = shown.slice(0, 1).toUpperCase();
}

// setTileTrack puts track in the tile's stream, replacing one of its kind.
export function setTileTrack(t, track) {
  for (const old of t.stream.getTracks()) {
    if (old.kind === track.kind && old !== track) t.stream.removeTrack(old);
  }
  if (!t.stream.getTracks().includes(track)) t.stream.addTrack(track);
  track.addEventListener('mute', () => refreshTile(t));
  track.addEventListener('unmute', () => refreshTile(t));
  track.addEventListener('ended', () => refreshTile(t));
  refreshTile(t);
  play(t);
}

export function removeTileTrack(t, kind) {
  for (const tr of t.stream.getTracks()) if (tr.kind === kind) t.stream.removeTrack(tr);
  refreshTile(t);
}

export function refreshTile(t) {
  const video = t.stream.getVideoTracks().find((x) => x.readyState === 'live');
  const hasAudio = t.stream.getAudioTracks().some((x) => x.readyState === 'live');
  const showVideo = !!video && !t.videoMuted && (t.local || !video.muted);
  t.novideo.hidden = showVideo;
  t.el.classList.toggle('no-video', !showVideo);
  t.flags.replaceChildren();
  if (t.source === 'camera') {
    if (t.audioMuted || !hasAudio) t.flags.append(flag('mic off', 'mic'));
    if (t.videoMuted || !video) t.flags.append(flag('camera off', 'cam'));
  }
}

function flag(text, kind) {
  const s = document.createElement('span');
  s.className = `flag flag-${kind}`;
  s.textContent = text;
  return s;
}

export function removeTile(key) {
  const t = tiles.get(key);
  if (!t) return;
  t.video.srcObject = null;
  t.el.remove();
  tiles.delete(key);
}

export function removeTiles(pred) {
  for (const t of allTiles()) if (pred(t)) removeTile(t.key);
}

// setSpeakers highlights the camera tiles of the participants speaking
// now (by participant sid, loudest first): each gets the class
// "speaking", the loudest also "loudest", and data-speaker-rank (1 is the
// loudest). An empty list clears them.
const speakerRank = new Map(); // participant sid -> rank (1: the loudest)

export function setSpeakers(sids) {
  speakerRank.clear();
  sids.forEach((sid, i) => speakerRank.set(sid, i + 1));
  for (const t of tiles.values()) markSpeaker(t);
}

function markSpeaker(t) {
  const r = t.source === 'camera' ? speakerRank.get(t.el.dataset.participantSid) : undefined;
  t.el.classList.toggle('speaking', !!r);
  t.el.classList.toggle('loudest', r === 1);
  if (r) t.el.dataset.speakerRank = String(r);
  else delete t.el.dataset.speakerRank;
}

// play starts a tile's video; when the browser blocks audible autoplay it
// shows the "enable sound" button, whose click plays every tile.
export function play(t) {
  const p = t.video.play();
  if (p && p.catch) {
    p.catch((e) => {
      if (e.name === 'NotAllowedError') $('enable-audio').hidden = false;
    });
  }
}

export function playAll() {
  $('enable-audio').hidden = true;
  for (const t of tiles.values()) play(t);
}

// ---- controls --------------------------------------------------------------

export function setToggle(id, on, onText, offText, enabled = true) {
  const b = $(id);
  b.disabled = !enabled;
  b.setAttribute('aria-pressed', String(on));
  b.textContent = on ? onText : offText;
}

// fillDevices lists cameras and microphones in the two selects, selecting
// the ones in use.
export async function fillDevices(currentIds) {
  let devices = [];
  try {
    devices = await navigator.mediaDevices.enumerateDevices();
  } catch {
    return;
  }
  for (const [id, kind, fallback] of [['sel-cam', 'videoinput', 'Camera'], ['sel-mic', 'audioinput', 'Microphone']]) {
    const sel = $(id);
    sel.replaceChildren();
    devices.filter((d) => d.kind === kind && d.deviceId).forEach((d, i) => {
      const o = document.createElement('option');
      o.value = d.deviceId;
      o.textContent = d.label || `${fallback} ${i + 1}`;
      o.selected = d.deviceId === currentIds[kind];
      sel.append(o);
    });
    sel.disabled = sel.options.length < 2;
  }
}

// ---- side panel ----------------------------------------------------------------

// The side panel holds People and Chat; each has a footer button that shows
// or hides it, and the panel itself shows while either is open.
const PANELS = { people: 'btn-people', chat: 'btn-chat' };

export function panelOpen(name) {
  return !$(`${name}-panel`).hidden;
}

export function setPanel(name, open) {
  $(`${name}-panel`).hidden = !open;
  $(PANELS[name]).setAttribute('aria-expanded', String(open));
  $('side').hidden = !Object.keys(PANELS).some(panelOpen);
}
