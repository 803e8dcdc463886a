// Parley demo client: the page's state, local media, joining and leaving.
// session.js speaks the protocol, ui.js draws, presence.js and chat.js run
// the People and Chat panels over the data channels. Plain ES modules, no
// build.

import { Chat } from './chat.js';
import { Presence } from './presence.js';
import { inUse } from './icewatch.js';
import { Session } from './session.js';
import { CAMERA_CONSTRAINTS, Dynacast } from './simulcast.js';
import { getToken } from './token.js';
import * as ui from './ui.js';
import { QUALITIES } from './viewer.js';

const { $ } = ui;
const params = new URLSearchParams(location.search);

// Reconnecting: exponential backoff with full jitter, so that a room whose
// server went away does not come back all at once: attempt n waits
// random(0, min(max, RETRY_BASE_MS * 2^n)). A dropped socket is resumed
// while the server can still have the session (its grace period, 30 s by
// default: resumes wait at most RESUME_MAX_MS, so as not to sleep through
// much of it); after that, or when the resume is refused, the page joins
// afresh (waiting at most JOIN_MAX_MS), at most MAX_REJOINS times in a row.
const RETRY_BASE_MS = 500;
const RESUME_MAX_MS = 5000;
const JOIN_MAX_MS = 10000;
const MAX_REJOINS = 8;
const MAX_DEPARTURES = 200;
// Several servers (docs/scaling.md). A join refused with a CLUSTER_RETRY
// code (the room's server does not answer yet, Redis does not answer,
// every server is full) is tried again after CLUSTER_BASE_MS * 2^n, at
// most CLUSTER_MAX_MS, times a random 0.5-1: never sooner than half a
// second, however often it is refused, for up to CLUSTER_GIVE_UP_MS. A
// room that moved (room_moved) is joined again within half a second, but
// backs off the same way when it moves again within MOVE_WINDOW_MS.
const CLUSTER_BASE_MS = 1000;
const CLUSTER_MAX_MS = 15000;
const CLUSTER_GIVE_UP_MS = 10 * 60 * 1000;
const MOVE_WINDOW_MS = 30000;
// The badge and the message while the page waits for the servers.
const CLUSTER_STATUS = {
  room_moved: ['the room is moving to another server…', 'The room is moving to another server. Joining again…'],
  node_unavailable: ['the room is moving to another server…', "The room's server does not answer; the room is moving to another server. Trying again…"],
  cluster_unavailable: ['waiting for the servers…', 'The servers cannot reach their shared state right now. Trying again…'],
  no_node_available: ['waiting for a free server…', 'Every server is full or restarting. Trying again…'],
};

// ---- application state -------------------------------------------------------

const app = {
  state: 'idle', // connecting, connected, reconnecting, disconnected
  join: null, // {room, name, token}
  session: null, // the current Session
  camera: null, // MediaStream of our camera and microphone, or null
  screen: null, // MediaStream of our screen share, or null
  attempts: 0, // reconnect attempts since the last successful join or resume
  clusterTries: 0, // joins refused for now by the servers (CLUSTER_RETRY) since then
  clusterSince: 0, // when the first of those was refused; 0 when none was
  moves: 0, // room_moved in a row, each within MOVE_WINDOW_MS of the last
  movedAt: 0, // when the room last moved
  retryText: '', // the badge while waiting for the servers ('' otherwise)
  retryTimer: 0,
  retryAt: 0, // when the next attempt is due; 0 when none is scheduled
  epoch: 0, // counts joins started, so that a superseded one gives up
  dataGrant: true, // the token allows chat and presence changes
  departures: [], // participant_left as the server said it: {sid, identity, reason, at}
  quality: 'auto', // the highest video quality asked for (auto, high, medium, low)
};

// setState shows the badge; "Retry now" shows while the signaling
// connection is being retried.
function setState(state, text) {
  app.state = state;
  ui.setState(state, text);
  const s = app.session;
  $('btn-retry').hidden = !(state === 'reconnecting' && app.join && !(s && s.live));
}

const localKey = (group) => ui.tileKey('local', group);

// ---- presence and chat over the data channels ----------------------------------

// Chat and presence count as offline while the signaling socket is away,
// although the data channels stay: what is sent then waits in the outbox
// and goes out when the session is resumed.
const link = () => (app.session && app.session.data) || null;
const isOnline = () => !!(app.session && app.session.online);
const sendData = (msg) => isOnline() && link().send(msg);

const chat = new Chat({ send: sendData, isOnline, nameOf: (id) => presence.nameOf(id) });
const presence = new Presence({ send: sendData, changed: (p) => chat.setPeople(p.entries(), p.self) });

// onData handles one message from the data channels (docs/protocol.md).
function onData(msg) {
  switch (msg.type) {
    case 'roster':
      presence.setRoster(msg.self, msg.participants);
      // The first message on a new channel: send what waits.
      chat.setIdentity(msg.self);
      chat.setLimits(msg.limits);
      chat.online();
      break;
    case 'presence': presence.update(msg.participant); break;
    case 'presence_left': presence.remove(msg.identity, msg.sid); break;
    case 'history': chat.onHistory(msg.messages); break;
    case 'chat': chat.onChat(msg); break;
    case 'chat_ack': chat.onAck(msg); break;
    case 'error':
      if (!chat.onError(msg)) console.warn('parley: data error', msg.code, msg.request || '', msg.message || '');
      break;
    case 'data':
    case 'pointer':
      break; // application data: the demo page uses none
    default:
      console.warn('parley: unknown data message', msg.type);
  }
}

// host is how a Session reports back.
const host = {
  joined: onJoined,
  dropped: sessionDropped,
  resumed: onResumed,
  changed: updateState,
  closed: sessionClosed,
  left: (s, d) => {
    if (s !== app.session) return;
    app.departures.push({ sid: d.sid, identity: d.identity, reason: d.reason || '', at: Date.now() });
    if (app.departures.length > MAX_DEPARTURES) app.departures.shift();
  },
  dataOpen: () => chat.render(),
  data: (s, msg) => { if (s === app.session) onData(msg); },
  dataClosed: () => chat.render(),
  // Who speaks now, loudest first; an ended session clears the list.
  speakers: (s, list) => {
    if (s !== app.session && list.length > 0) return;
    ui.setSpeakers(list.map((x) => x.sid));
    presence.setSpeakers(list.map((x) => x.identity));
  },
  quality: () => app.quality,
  updated: (s) => {
    if (s !== app.session) return;
    updateControls();
    ui.showMessage('An administrator changed what you may do in this room.', 'info');
  },
  // An administrator muted our camera or microphone: the buttons follow.
  // Nobody unmutes us remotely: an unmute of a track we muted ourselves is
  // answered by muting it again. The state we set ourselves comes back
  // too, and is a no-op then.
  ownMuted: (source, muted) => {
    const kind = source === 'camera' ? 'video' : source === 'microphone' ? 'audio' : '';
    const track = kind && localTrack(kind);
    if (track && track.enabled && muted) setMuted(kind, true);
    else if (track && !track.enabled && !muted) setMuted(kind, true);
  },
};

// onJoined shows our own tile and publishes our media.
function onJoined(s, d) {
  if (s !== app.session) return;
  reconnected();
  $('room-label').textContent = d.room || s.room;
  $('controls').hidden = false;
  app.dataGrant = s.grants.data !== false;
  chat.setIdentity(s.self.identity, s.self.name);
  const mine = ui.ensureTile(localKey('camera'), { psid: s.self.sid, identity: s.self.identity, name: s.self.name, source: 'camera', local: true });
  if (app.camera) {
    for (const track of app.camera.getTracks()) ui.setTileTrack(mine, track);
  }
  mine.videoMuted = !localTrack('video')?.enabled;
  mine.audioMuted = !localTrack('audio')?.enabled;
  ui.refreshTile(mine);
  if (s.grants.publish === false) {
    ui.showMessage('Your token lets you watch and listen only.', 'info');
  } else if (app.camera) {
    for (const track of app.camera.getTracks()) {
      s.addSender(track, app.camera, track.kind === 'video' ? 'camera' : 'microphone');
    }
    s.negotiate();
  }
  updateControls();
  updateState();
}

// ---- connection state -------------------------------------------------------

// updateState derives the badge from the socket and both connections: a
// connection counts once it has something to carry (we publish on it, or
// the server has offered on it).
function updateState() {
  const s = app.session;
  if (!s || s.ended) {
    if (app.join && app.retryAt) setState('reconnecting', app.retryText); // between two joins
    return;
  }
  if (!s.self) {
    setState(app.attempts > 0 || app.retryText ? 'reconnecting' : 'connecting', app.retryText);
    return;
  }
  if (!s.live) {
    setState('reconnecting', app.retryText);
    return;
  }
  const states = [s.pub, s.sub].filter(inUse).map((pc) => pc.connectionState);
  if (states.some((x) => x === 'disconnected' || x === 'failed')) setState('reconnecting', 'media interrupted, reconnecting…');
  else if (states.some((x) => x === 'new' || x === 'connecting')) setState('connecting', 'connecting media…');
  else setState('connected');
}

// reconnected: joined or resumed; the retries start from scratch.
function reconnected() {
  if (app.attempts > 0 || app.retryText) ui.showMessage(''); // back after a reconnect
  app.attempts = 0;
  app.clusterTries = 0;
  app.clusterSince = 0;
  app.retryText = '';
  clearRetry();
}

// waitForServers shows why the page waits (a CLUSTER_STATUS code).
function waitForServers(code) {
  const [badge, text] = CLUSTER_STATUS[code] || CLUSTER_STATUS.cluster_unavailable;
  app.retryText = badge;
  ui.showMessage(text, 'info');
}

// clusterDelay is the wait before the n-th retry (from 0) after the
// servers refused: 0.5-1 s, 1-2 s, 2-4 s, … up to CLUSTER_MAX_MS.
function clusterDelay(n) {
  const d = Math.min(CLUSTER_MAX_MS, CLUSTER_BASE_MS * 2 ** Math.min(n, 16));
  return d / 2 + Math.random() * (d / 2);
}

// sessionDropped: the socket dropped, the session (its connections,
// tiles and data channels) stays; it is resumed on a new socket.
function sessionDropped(s, ev) {
  if (s !== app.session) return;
  console.info('parley: the connection to the server dropped', ev.code, ev.reason || '');
  chat.render();
  updateControls();
  // A resume refused for now by the servers is tried again, with the
  // usual backoff, while the session may still wait on its server.
  if (s.retryCode) waitForServers(s.retryCode);
  else app.retryText = '';
  scheduleRetry();
}

// onResumed: the session goes on; what the chat and presence held back
// while offline goes out now.
function onResumed(s, d) {
  if (s !== app.session) return;
  reconnected();
  $('room-label').textContent = d.room || s.room;
  app.dataGrant = s.grants.data !== false;
  chat.setIdentity(s.self.identity, s.self.name);
  chat.online();
  presence.resync();
  updateControls();
  updateState();
}

// sessionClosed: the session is over. Unless that is final, the page
// joins afresh: at once when the server refused to resume it or the room
// moved to another server (room_moved), after a growing wait when the
// servers refused the join for now (CLUSTER_RETRY).
function sessionClosed(s, ev) {
  if (s !== app.session) return;
  app.session = null;
  updateControls();
  chat.render();
  if (s.fatal || !app.join) {
    app.join = null;
    app.retryText = '';
    teardown();
    setState('disconnected');
    if ($('message').hidden) ui.showMessage('You are no longer in the room.', 'info');
    showLobby();
    return;
  }
  stopScreen();
  if (s.moved) {
    // The room's server stopped or drains: join again (a fresh session,
    // new peer connections); the room is placed on a live server.
    const now = Date.now();
    app.moves = now - app.movedAt < MOVE_WINDOW_MS ? app.moves + 1 : 0;
    app.movedAt = now;
    console.info('parley: the room moved to another server; joining again', app.moves);
    waitForServers('room_moved');
    scheduleRetry(app.moves === 0 ? Math.random() * RETRY_BASE_MS : clusterDelay(app.moves - 1));
    return;
  }
  if (s.retryCode) {
    // Refused for now: the same join works again in a few seconds.
    const now = Date.now();
    if (!app.clusterSince) app.clusterSince = now;
    if (now - app.clusterSince > CLUSTER_GIVE_UP_MS) {
      giveUp(s.retryCode);
      return;
    }
    waitForServers(s.retryCode);
    scheduleRetry(clusterDelay(app.clusterTries++));
    return;
  }
  app.retryText = '';
  if (s.resumeFailed) app.attempts = 0;
  if (app.attempts >= MAX_REJOINS) {
    giveUp(ev.reason);
    return;
  }
  scheduleRetry();
}

// scheduleRetry schedules the next attempt after delay ms, or after the
// usual backoff (which counts as an attempt) when delay is not given.
function scheduleRetry(delay) {
  clearTimeout(app.retryTimer);
  const s = app.session;
  const resuming = !!(s && s.self && !s.live);
  if (delay === undefined) {
    delay = Math.random() * Math.min(resuming ? RESUME_MAX_MS : JOIN_MAX_MS, RETRY_BASE_MS * 2 ** app.attempts);
    app.attempts++;
  }
  // A session the server has certainly ended by then is given up then.
  if (resuming) delay = Math.max(0, Math.min(delay, s.graceLeft()));
  app.retryAt = Date.now() + delay;
  app.retryTimer = setTimeout(retryNow, delay);
  updateState();
}

function clearRetry() {
  clearTimeout(app.retryTimer);
  app.retryTimer = 0;
  app.retryAt = 0;
}

// retryNow makes the next attempt (the timer's, or "Retry now"): resume
// the session while the server may still have it, else join afresh. An
// attempt under way is started again.
function retryNow() {
  clearRetry();
  if (!app.join) return;
  const s = app.session;
  if (s && s.live) return;
  if (s && s.self && !s.graceOver()) {
    s.reconnect();
    updateState();
    return;
  }
  if (s) {
    // The server has ended the session by now (or a join is under way).
    if (s.self) {
      console.info('parley: the session can no longer be resumed; joining afresh');
      app.attempts = 0;
    }
    app.session = null;
    s.end();
    stopScreen();
  }
  rejoin();
}

// rejoin joins afresh with a new token (the tab keeps its identity).
async function rejoin() {
  const epoch = ++app.epoch;
  const { room, name } = app.join;
  setState('reconnecting', app.retryText);
  let token;
  try {
    ({ token } = await getToken(room, name, params.get('token')));
  } catch (e) {
    if (epoch !== app.epoch || !app.join) return;
    console.warn('parley: no token to join again:', e.message);
    if (app.attempts >= MAX_REJOINS) giveUp(e.message);
    else scheduleRetry();
    return;
  }
  if (epoch !== app.epoch || !app.join || app.session) return;
  app.join.token = token;
  app.session = new Session(token, room, host);
  updateState();
}

function giveUp(reason) {
  clearRetry();
  app.retryText = '';
  setState('disconnected');
  ui.showMessage(`The connection to the server was lost${reason ? ` (${reason})` : ''}. Reload the page to join again.`);
}

// ---- local media --------------------------------------------------------------

function localTrack(kind) {
  return app.camera ? app.camera.getTracks().find((t) => t.kind === kind) || null : null;
}

// openMedia asks for camera and microphone, then the microphone alone, then
// nothing: without media we still join, to watch and listen.
async function openMedia() {
  if (!navigator.mediaDevices || !navigator.mediaDevices.getUserMedia) {
    ui.showMessage('This browser cannot use a camera here (the page needs https or localhost). You can watch and listen.', 'info');
    return;
  }
  let err = null;
  for (const constraints of [{ audio: true, video: CAMERA_CONSTRAINTS }, { audio: true }]) {
    try {
      app.camera = await navigator.mediaDevices.getUserMedia(constraints);
      if (!constraints.video) ui.showMessage(cameraProblem(err, 'Joining with your microphone only.'), 'info');
      return;
    } catch (e) {
      err = err || e;
    }
  }
  app.camera = null;
  ui.showMessage(cameraProblem(err, 'You can watch and listen, but the others cannot see or hear you.'), 'info');
}

function cameraProblem(err, then) {
  if (err && (err.name === 'NotAllowedError' || err.name === 'SecurityError')) {
    return `Camera access was denied. ${then} Allow access in the browser and reload to publish.`;
  }
  if (err && err.name === 'NotFoundError') return `No camera was found. ${then}`;
  return `The camera could not be opened${err ? ` (${err.name})` : ''}. ${then}`;
}

function setMuted(kind, muted) {
  const track = localTrack(kind);
  if (!track) return;
  track.enabled = !muted;
  const s = app.session;
  const entry = s && s.senderFor(kind === 'video' ? 'camera' : 'microphone');
  const sid = entry && s.ownSids.get(entry.info.cid);
  if (sid) s.mute(sid, muted);
  const mine = ui.getTile(localKey('camera'));
  if (mine) {
    if (kind === 'video') mine.videoMuted = muted;
    else mine.audioMuted = muted;
    ui.refreshTile(mine);
  }
  updateControls();
}

async function switchDevice(kind, deviceId) {
  const old = localTrack(kind);
  if (!old || !deviceId || old.getSettings().deviceId === deviceId) return;
  let track;
  try {
    const constraints = kind === 'video' ? { ...CAMERA_CONSTRAINTS, deviceId: { exact: deviceId } } : { deviceId: { exact: deviceId } };
    const stream = await navigator.mediaDevices.getUserMedia({ [kind]: constraints });
    track = stream.getTracks()[0];
  } catch (e) {
    ui.showMessage(`Could not switch to that device: ${e.message || e.name}`);
    return;
  }
  track.enabled = old.enabled;
  const entry = app.session && app.session.senderFor(kind === 'video' ? 'camera' : 'microphone');
  if (entry) await entry.sender.replaceTrack(track);
  app.camera.removeTrack(old);
  app.camera.addTrack(track);
  old.stop();
  const mine = ui.getTile(localKey('camera'));
  if (mine) ui.setTileTrack(mine, track);
  refreshDevices();
}

function refreshDevices() {
  const ids = {};
  for (const [kind, dk] of [['video', 'videoinput'], ['audio', 'audioinput']]) {
    const t = localTrack(kind);
    if (t) ids[dk] = t.getSettings().deviceId;
  }
  ui.fillDevices(ids);
}

async function startScreen() {
  const s = app.session;
  if (!s || !s.pub || app.screen) return;
  let stream;
  try {
    stream = await navigator.mediaDevices.getDisplayMedia({ video: true, audio: false });
  } catch (e) {
    if (e.name !== 'NotAllowedError' && e.name !== 'AbortError') ui.showMessage(`Could not share the screen: ${e.message || e.name}`);
    return;
  }
  if (s !== app.session || s.ended) {
    for (const t of stream.getTracks()) t.stop();
    return;
  }
  app.screen = stream;
  const track = stream.getVideoTracks()[0];
  track.addEventListener('ended', stopScreen); // the browser's "stop sharing"
  s.addSender(track, stream, 'screen');
  const t = ui.ensureTile(localKey('screen'), { psid: s.self.sid, identity: s.self.identity, name: s.self.name, source: 'screen', local: true });
  ui.setTileTrack(t, track);
  updateControls();
  s.negotiate();
}

function stopScreen() {
  const stream = app.screen;
  if (!stream) return;
  app.screen = null;
  for (const t of stream.getTracks()) t.stop();
  ui.removeTile(localKey('screen'));
  const s = app.session;
  const entry = s && !s.ended && s.senderFor('screen');
  if (entry) {
    const sid = s.ownSids.get(entry.info.cid);
    if (sid) s.send('unpublish', { track_sid: sid });
    const tr = s.pub.getTransceivers().find((x) => x.sender === entry.sender);
    s.senders.delete(entry.sender);
    s.pub.removeTrack(entry.sender);
    if (tr && tr.stop) tr.stop();
    s.negotiate();
  }
  updateControls();
}

function updateControls() {
  const s = app.session;
  const joined = !!(s && s.self && !s.ended);
  const canPublish = joined && s.grants.publish !== false;
  const mic = localTrack('audio');
  const cam = localTrack('video');
  ui.setToggle('btn-mic', !!mic && mic.enabled, 'Mic on', 'Mic off', canPublish && !!mic);
  ui.setToggle('btn-cam', !!cam && cam.enabled, 'Camera on', 'Camera off', canPublish && !!cam);
  ui.setToggle('btn-screen', !!app.screen, 'Stop sharing', 'Share screen',
    canPublish && !!(navigator.mediaDevices && navigator.mediaDevices.getDisplayMedia));
  // Chat stays usable while reconnecting: what is sent then waits.
  for (const id of ['btn-hand', 'chat-input', 'chat-send']) $(id).disabled = !app.dataGrant;
  $('chat-input').placeholder = app.dataGrant ? 'Write a message' : 'Your token does not allow chat';
}

// setQuality sets the highest video quality the page asks for; it is kept
// for the next visits.
function setQuality(q) {
  if (!QUALITIES.includes(q)) return;
  app.quality = q;
  $('sel-quality').value = q;
  try {
    localStorage.setItem('parley.quality', q);
  } catch { /* storage may be off */ }
  if (app.session) app.session.viewer.setQuality(q);
}

// ---- joining and leaving --------------------------------------------------------

async function join(room, name) {
  clearRetry();
  const epoch = ++app.epoch;
  $('lobby').hidden = true;
  $('room-label').textContent = room;
  setState('connecting');
  let token;
  let identity;
  try {
    ({ token, identity } = await getToken(room, name, params.get('token')));
  } catch (e) {
    setState('disconnected');
    ui.showMessage(e.message);
    showLobby();
    return;
  }
  if (epoch !== app.epoch) return;
  presence.start(identity);
  chat.start(room, identity, name);
  if (!app.camera) await openMedia();
  if (epoch !== app.epoch) return;
  app.join = { room, name, token };
  app.attempts = 0;
  app.clusterTries = 0;
  app.clusterSince = 0;
  app.moves = 0;
  app.retryText = '';
  app.session = new Session(token, room, host);
  refreshDevices();
  updateState();
}

// teardown stops our media and empties the page.
function teardown() {
  clearRetry();
  stopScreen();
  if (app.camera) for (const t of app.camera.getTracks()) t.stop();
  app.camera = null;
  ui.removeTiles(() => true);
  ui.setPanel('people', false);
  ui.setPanel('chat', false);
  chat.setOpen(false);
  chat.stop();
  presence.stop();
  $('controls').hidden = true;
  $('enable-audio').hidden = true;
}

function leave() {
  const s = app.session;
  app.epoch++;
  app.join = null;
  app.session = null;
  app.retryText = '';
  if (s) s.leave();
  teardown();
  setState('disconnected', 'left');
  ui.showMessage('You left the room.', 'info');
  showLobby();
}

function showLobby() {
  $('lobby').hidden = false;
  $('lobby-room').value = $('lobby-room').value || params.get('room') || '';
  $('lobby-name').value = $('lobby-name').value || params.get('name') || localStorage.getItem('parley.name') || '';
}

// ---- wiring -----------------------------------------------------------------

$('lobby').addEventListener('submit', (e) => {
  e.preventDefault();
  const room = $('lobby-room').value.trim();
  const name = $('lobby-name').value.trim();
  if (!room || !name) return;
  try {
    localStorage.setItem('parley.name', name);
  } catch { /* storage may be off */ }
  const q = new URLSearchParams(location.search);
  q.set('room', room);
  q.set('name', name);
  history.replaceState(null, '', `?${q}`);
  ui.showMessage('');
  join(room, name);
});
$('btn-mic').addEventListener('click', () => { const t = localTrack('audio'); if (t) setMuted('audio', t.enabled); });
$('btn-cam').addEventListener('click', () => { const t = localTrack('video'); if (t) setMuted('video', t.enabled); });
$('btn-screen').addEventListener('click', () => (app.screen ? stopScreen() : startScreen()));
$('btn-leave').addEventListener('click', leave);
$('btn-retry').addEventListener('click', retryNow);
$('sel-cam').addEventListener('change', (e) => switchDevice('video', e.target.value));
$('sel-mic').addEventListener('change', (e) => switchDevice('audio', e.target.value));
$('enable-audio').addEventListener('click', ui.playAll);
$('sel-quality').addEventListener('change', (e) => setQuality(e.target.value));
$('btn-people').addEventListener('click', () => ui.setPanel('people', !ui.panelOpen('people')));
$('btn-chat').addEventListener('click', () => {
  const open = !ui.panelOpen('chat');
  ui.setPanel('chat', open);
  chat.setOpen(open);
  if (open) $('chat-input').focus();
});
document.addEventListener('visibilitychange', () => {
  presence.setAway(document.visibilityState === 'hidden');
  chat.seen();
});
if (navigator.mediaDevices && navigator.mediaDevices.addEventListener) {
  navigator.mediaDevices.addEventListener('devicechange', refreshDevices);
}
window.addEventListener('pagehide', () => { if (app.session) app.session.leave(); });
// The browser says the network is back: no need to wait for the backoff.
window.addEventListener('online', () => { if (app.retryAt) retryNow(); });

// A read-only hook for tests and debugging.
window.parley = Object.freeze({
  get state() { return app.state; },
  // ms until the next reconnect attempt; -1 when none is scheduled.
  get retryIn() { return app.retryAt ? Math.max(0, app.retryAt - Date.now()) : -1; },
  departures: () => app.departures.map((x) => ({ ...x })),
  get self() { return app.session && app.session.self; },
  get publisherPC() { return app.session && app.session.pub; },
  get subscriberPC() { return app.session && app.session.sub; },
  participants: () => (app.session ? [...app.session.participants.values()] : []),
  tracks: () => (app.session ? [...app.session.tracks.entries()].map(([sid, t]) => ({ sid, participant_sid: t.psid, ...t.info })) : []),
  get identity() { return chat.self; },
  get dataOpen() { return isOnline(); },
  get unread() { return chat.unread; },
  roster: () => presence.entries().map((p) => ({ ...p })),
  chat: () => chat.snapshot(),
  outbox: () => chat.outbox.entries(),
  // What the page last told the server per remote video track sid
  // (track_settings), the last speakers, and the RIDs our camera encodes.
  trackSettings: () => (app.session ? app.session.viewer.snapshot() : {}),
  speakers: () => (app.session ? app.session.speakers.map((x) => ({ ...x })) : []),
  cameraLayers: () => {
    const e = app.session && app.session.pub && app.session.senderFor('camera');
    return e && e.sender.track && e.sender.track.kind === 'video' ? Dynacast.active(e.sender) : [];
  },
});

{
  let q = 'auto';
  try {
    q = localStorage.getItem('parley.quality') || 'auto';
  } catch { /* storage may be off */ }
  if (QUALITIES.includes(q)) {
    app.quality = q;
    $('sel-quality').value = q;
  }
}

{
  const room = params.get('room');
  const name = params.get('name');
  if (room && (name || params.get('token'))) join(room, name || '');
  else showLobby();
}
