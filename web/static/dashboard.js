// Parley operator dashboard: the admin event stream (docs/api.md, "Events")
// drawn as a live list of rooms, participants and tracks, two charts of the
// server's totals, and the actions that remove participants, mute tracks
// and close rooms. Plain ES modules, no build; every name from the server
// is shown with textContent.

import { api, devToken, keepToken, keptToken, paths } from './admin.js';
import { formatBitrate, LineChart } from './chart.js';
import { RoomState } from './roomstate.js';

const $ = (id) => document.getElementById(id);

const EVENT_TYPES = ['room_started', 'room_finished', 'participant_joined', 'participant_left',
  'track_published', 'track_unpublished', 'track_muted'];
const HISTORY_MS = 5 * 60 * 1000;
const STALE_MS = 15000; // stats come every 2 s: a stream silent this long is dead
const CONFIRM_MS = 4000; // how long a "Really …?" button waits for its second click

const STATE_TEXT = {
  idle: 'starting…',
  'no-token': 'no token',
  connecting: 'connecting…',
  live: 'live',
  reconnecting: 'reconnecting…',
  unauthorized: 'token refused',
};

// ---- state ---------------------------------------------------------------------

const conn = {
  state: 'idle',
  token: '',
  source: '', // where the token came from: url, storage, dev, form
  devRetried: false, // a refused development token was replaced once
  allRooms: false, // the token's scope is every room (room claim '*')
  es: null, // the EventSource
  everLive: false,
  retries: 0, // reopen attempts since the stream was last open
  retryTimer: 0,
  watchdog: 0,
  lastEventId: '',
  mismatches: 0, // stats in a row whose totals disagree with the list
  lastResync: 0,
};

const model = new RoomState();
const stats = { count: 0, last: null, samples: [] };
const recent = []; // the last events, for the test hook and debugging
const RECENT_MAX = 200;

function setState(state, text) {
  conn.state = state;
  const el = $('conn-state');
  el.dataset.state = state;
  el.textContent = text || STATE_TEXT[state] || state;
}

// showMessage shows one message; kind 'error' or 'info'. An empty text hides it.
function showMessage(text, kind = 'error') {
  const el = $('message');
  el.textContent = text || '';
  el.classList.toggle('info', kind === 'info');
  el.hidden = !text;
}

// ---- the token -------------------------------------------------------------------

// findToken: the link's ?token=, else the one this tab keeps, else a
// development-mode server's, else the operator pastes one.
async function findToken() {
  const params = new URLSearchParams(location.search);
  const given = (params.get('token') || '').trim();
  if (given) {
    // Keep it in the tab, not in the address bar and its history.
    params.delete('token');
    const q = params.toString();
    history.replaceState(null, '', location.pathname + (q ? `?${q}` : '') + location.hash);
    return connect(given, 'url');
  }
  const kept = keptToken();
  if (kept) return connect(kept, 'storage');
  return tryDevToken('');
}

// tryDevToken asks a development-mode server for a token. When there is
// none, the form shows with reason (and the state, e.g. unauthorized).
async function tryDevToken(reason, state = 'no-token') {
  setState('connecting', 'asking for a token…');
  let token = '';
  try {
    token = await devToken();
  } catch (e) {
    askForToken(reason || `Could not ask the server for a development token: ${e.readable}.`, state);
    return;
  }
  if (token) connect(token, 'dev');
  else askForToken(reason || 'This server has API keys, so it needs an admin token.', state);
}

function askForToken(reason, state = 'no-token') {
  closeStream();
  setState(state);
  $('token-reason').textContent = reason;
  $('token-form').hidden = false;
  $('board').hidden = true;
  $('btn-forget').hidden = true;
  $('token-input').value = '';
  $('token-input').focus();
}

function connect(token, source) {
  conn.token = token;
  conn.source = source;
  conn.allRooms = tokenRoom(token) === '*';
  keepToken(token);
  $('token-form').hidden = true;
  $('board').hidden = false;
  $('btn-forget').hidden = false;
  conn.everLive = false;
  conn.retries = 0;
  openStream();
}

// tokenRoom reads the room claim of a JWT, unchecked ('' if none).
function tokenRoom(token) {
  try {
    const b64 = token.split('.')[1].replace(/-/g, '+').replace(/_/g, '/');
    const bytes = Uint8Array.from(atob(b64.padEnd(Math.ceil(b64.length / 4) * 4, '=')), (c) => c.charCodeAt(0));
    const room = JSON.parse(new TextDecoder().decode(bytes)).room;
    return typeof room === 'string' ? room : '';
  } catch {
    return '';
  }
}

// refused: the server does not take the token (401 or 403).
function refused(err) {
  closeStream();
  keepToken('');
  conn.token = '';
  const reason = `The server refused the token: ${err.readable}.`;
  if ((conn.source === 'dev' || conn.source === 'storage') && !conn.devRetried) {
    // A kept or development token may simply have expired: a development
    // server gives a fresh one (once); otherwise the form asks.
    conn.devRetried = true;
    tryDevToken(`${reason} Paste another admin token.`, 'unauthorized');
    return;
  }
  askForToken(`${reason} Paste another admin token.`, 'unauthorized');
}

// ---- the event stream --------------------------------------------------------------

function openStream() {
  closeStream();
  setState(conn.everLive ? 'reconnecting' : 'connecting');
  const es = new EventSource(paths.events(conn.token));
  conn.es = es;
  const mine = (fn) => (ev) => { if (es === conn.es) fn(ev); };
  es.addEventListener('open', mine(() => {
    conn.everLive = true;
    conn.retries = 0;
    conn.devRetried = false;
    setState('live');
    kickWatchdog();
  }));
  es.addEventListener('error', mine(() => streamFailed(es)));
  es.addEventListener('snapshot', mine(onSnapshot));
  es.addEventListener('reset', mine(onReset));
  es.addEventListener('stats', mine(onStats));
  for (const type of EVENT_TYPES) es.addEventListener(type, mine(onEvent));
}

function closeStream() {
  clearTimeout(conn.retryTimer);
  clearTimeout(conn.watchdog);
  if (conn.es) conn.es.close();
  conn.es = null;
}

// streamFailed: while the browser retries by itself (readyState
// CONNECTING, with Last-Event-ID) we wait; once it gives up (CLOSED: the
// server answered with an error) a request with the same token tells a
// refused token from a server that is down or not ready.
async function streamFailed(es) {
  clearTimeout(conn.watchdog);
  if (es.readyState !== EventSource.CLOSED) {
    setState('reconnecting');
    return;
  }
  es.close();
  conn.es = null;
  setState('reconnecting', 'checking the token…');
  try {
    await api(conn.token, 'GET', paths.rooms());
  } catch (e) {
    if (conn.es || !conn.token) return; // something else took over meanwhile
    if (e.status === 401 || e.status === 403) {
      refused(e);
      return;
    }
  }
  if (conn.es || !conn.token) return;
  reopenLater();
}

// reopenLater opens a fresh stream (a snapshot, then live events) after
// a growing pause.
function reopenLater() {
  const delay = Math.min(1000 * 2 ** conn.retries, 15000);
  conn.retries++;
  setState('reconnecting', `stream failed, retrying in ${Math.round(delay / 1000)} s…`);
  clearTimeout(conn.retryTimer);
  conn.retryTimer = setTimeout(openStream, delay);
}

// kickWatchdog: a stream that carries nothing, not even the stats every
// 2 s, is dead without knowing it (a proxy, a sleeping laptop): open anew.
function kickWatchdog() {
  clearTimeout(conn.watchdog);
  conn.watchdog = setTimeout(() => {
    if (!conn.es || conn.es.readyState !== EventSource.OPEN) return;
    console.warn('parley dashboard: the event stream is silent, reopening it');
    openStream();
  }, STALE_MS);
}

function parse(ev) {
  kickWatchdog();
  if (ev.lastEventId) conn.lastEventId = ev.lastEventId;
  try {
    return JSON.parse(ev.data);
  } catch {
    console.warn('parley dashboard: an event that is not JSON', ev.type);
    return null;
  }
}

function onSnapshot(ev) {
  const d = parse(ev);
  if (!d) return;
  if (d.last_event_id !== undefined) conn.lastEventId = String(d.last_event_id);
  conn.mismatches = 0;
  model.replace(d.rooms);
  render();
}

// onReset: events were missed (the server no longer keeps them); a new
// stream without a last event id starts with the whole state again.
function onReset(ev) {
  parse(ev);
  openStream();
}

function onEvent(ev) {
  const d = parse(ev);
  if (!d) return;
  const e = { ...d, type: d.type || ev.type };
  recent.push(e);
  if (recent.length > RECENT_MAX) recent.shift();
  if (model.apply(e)) render();
}

// ---- totals and charts ----------------------------------------------------------------

let charts = null;

function onStats(ev) {
  const d = parse(ev);
  if (!d) return;
  stats.count++;
  stats.last = d;
  const time = Number(d.time) || Date.now();
  const s = stats.samples;
  if (s.length && time < s[s.length - 1].time - 1000) s.length = 0; // another server's clock
  s.push({ time, participants: num(d.participants), bitrate_in_bps: num(d.bitrate_in_bps), bitrate_out_bps: num(d.bitrate_out_bps) });
  while (s.length && s[0].time < time - HISTORY_MS - 10000) s.shift();

  $('t-rooms').textContent = String(num(d.rooms));
  $('t-participants').textContent = String(num(d.participants));
  $('t-published').textContent = String(num(d.published_tracks));
  $('t-subscribed').textContent = String(num(d.subscribed_tracks));
  $('t-bitrate-in').textContent = formatBitrate(d.bitrate_in_bps);
  $('t-bitrate-out').textContent = formatBitrate(d.bitrate_out_bps);
  $('t-bitrate-in').title = `${num(d.packets_in)} packets received in all`;
  $('t-bitrate-out').title = `${num(d.packets_out)} packets forwarded in all`;

  if (!charts) {
    charts = {
      participants: new LineChart($('chart-participants'), { series: [{ key: 'participants', label: 'participants' }], integer: true }),
      bitrate: new LineChart($('chart-bitrate'), {
        series: [{ key: 'bitrate_out_bps', label: 'out' }, { key: 'bitrate_in_bps', label: 'in' }],
        format: formatBitrate,
      }),
    };
  }
  charts.participants.update(s, time);
  charts.bitrate.update(s, time);
  checkTotals(d);
}

// checkTotals compares the list with the server's totals. They disagree
// for a moment while events are on their way; when they still do after
// three stats, events were lost (e.g. the browser resumed a restarted
// server's stream with an old Last-Event-ID), so a fresh stream starts
// with the whole state. Only a token for every room sees every room.
function checkTotals(d) {
  if (!conn.allRooms) return;
  const rooms = model.list();
  const participants = rooms.reduce((n, r) => n + r.participants.length, 0);
  if (num(d.rooms) === rooms.length && num(d.participants) === participants) {
    conn.mismatches = 0;
    return;
  }
  if (++conn.mismatches < 3 || Date.now() - conn.lastResync < 60000) return;
  conn.mismatches = 0;
  conn.lastResync = Date.now();
  console.warn('parley dashboard: the list disagrees with the server totals, fetching the whole state again');
  openStream();
}

function num(v) {
  const n = Number(v);
  return Number.isFinite(n) ? n : 0;
}

// ---- rooms, participants and tracks -----------------------------------------------------

// syncList makes parent's children show items, in order, reusing the
// element of each key (so that a button keeps its focus and its confirm
// step across updates).
function syncList(parent, items, keyOf, create, update) {
  const old = new Map();
  for (const el of parent.children) old.set(el.dataset.key, el);
  let i = 0;
  for (const item of items) {
    const key = keyOf(item);
    let el = old.get(key);
    if (el) old.delete(key);
    else {
      el = create(item);
      el.dataset.key = key;
    }
    update(el, item);
    if (parent.children[i] !== el) parent.insertBefore(el, parent.children[i] || null);
    i++;
  }
  for (const el of old.values()) el.remove();
}

function make(tag, className, text) {
  const el = document.createElement(tag);
  if (className) el.className = className;
  if (text !== undefined) el.textContent = text;
  return el;
}

function button(className, text, title) {
  const b = make('button', className, text);
  b.type = 'button';
  if (title) b.title = title;
  return b;
}

const part = (el, cls) => el.querySelector(`:scope > .${cls}, :scope > * > .${cls}`);

function clock(ms) {
  return ms ? new Date(ms).toLocaleTimeString([], { hour: '2-digit', minute: '2-digit', second: '2-digit' }) : '?';
}

function render() {
  const rooms = model.list();
  $('rooms-count').textContent = rooms.length ? String(rooms.length) : '';
  $('no-rooms').hidden = rooms.length > 0;
  syncList($('rooms'), rooms, (r) => r.name, createRoom, updateRoom);
}

function createRoom() {
  const li = make('li', 'room');
  const head = make('div', 'room-head');
  head.append(make('h3', 'room-name'), make('span', 'room-meta'),
    button('close-room danger', 'Close room', 'Close the room: everybody in it leaves'));
  li.append(head, make('ul', 'participants'), make('p', 'hint room-empty', 'Nobody is in this room.'));
  return li;
}

function updateRoom(li, r) {
  li.dataset.room = r.name;
  part(li, 'room-name').textContent = r.name;
  const tracks = r.participants.reduce((n, p) => n + p.tracks.length, 0);
  const people = r.participants.length;
  let meta = `${people} ${people === 1 ? 'participant' : 'participants'}`;
  if (r.max_participants) meta += ` of ${r.max_participants}`;
  meta += ` · ${tracks} ${tracks === 1 ? 'track' : 'tracks'}`;
  if (r.created_at) meta += ` · open since ${clock(r.created_at)}`;
  part(li, 'room-meta').textContent = meta;
  part(li, 'room-empty').hidden = people > 0;
  syncList(part(li, 'participants'), r.participants, (p) => p.sid, createParticipant, updateParticipant);
}

function createParticipant() {
  const li = make('li', 'participant');
  const head = make('div', 'p-head');
  head.append(make('span', 'p-name'), make('span', 'p-identity'), make('time', 'p-joined'),
    button('remove danger', 'Remove', 'Remove this participant from the room'));
  li.append(head, make('ul', 'tracks'));
  return li;
}

function updateParticipant(li, p) {
  li.dataset.identity = p.identity;
  li.dataset.sid = p.sid;
  part(li, 'p-name').textContent = p.name || p.identity;
  part(li, 'p-identity').textContent = p.identity;
  const joined = part(li, 'p-joined');
  joined.textContent = `joined ${clock(p.joined_at)}`;
  if (p.joined_at) {
    joined.dateTime = new Date(p.joined_at).toISOString();
    joined.title = new Date(p.joined_at).toLocaleString();
  }
  syncList(part(li, 'tracks'), p.tracks, (t) => t.sid, createTrack, updateTrack);
}

function createTrack() {
  const li = make('li', 'track');
  li.append(make('span', 't-source'), make('span', 't-kind'), make('span', 't-codec'), make('span', 't-state'),
    button('mute', 'Mute'));
  return li;
}

function updateTrack(li, t) {
  li.dataset.sid = t.sid;
  li.dataset.kind = t.kind;
  li.dataset.source = t.source;
  li.dataset.muted = String(t.muted);
  part(li, 't-source').textContent = t.source || '?';
  part(li, 't-kind').textContent = t.kind || '?';
  part(li, 't-codec').textContent = t.codec.replace(/^(audio|video)\//, '');
  part(li, 't-state').textContent = t.muted ? 'muted' : 'live';
  const b = part(li, 'mute');
  b.textContent = t.muted ? 'Unmute' : 'Mute';
  b.title = t.muted ? 'Forward this track again' : 'Stop forwarding this track to everybody';
}

// ---- actions ----------------------------------------------------------------------------

// armed: a destructive button's first click arms it ("Really …?"); a
// second click within CONFIRM_MS does it.
function armed(b, question) {
  if (b.classList.contains('armed')) {
    disarm(b);
    return true;
  }
  b.dataset.text = b.textContent;
  b.textContent = question;
  b.classList.add('armed');
  b.timer = setTimeout(() => disarm(b), CONFIRM_MS);
  return false;
}

function disarm(b) {
  clearTimeout(b.timer);
  if (!b.classList.contains('armed')) return;
  b.classList.remove('armed');
  b.textContent = b.dataset.text || b.textContent;
}

// act runs one request for button b; the list changes when the server's
// event arrives, not before, so it always shows what the server says.
async function act(b, what, method, path, body) {
  showMessage('');
  b.disabled = true;
  b.classList.add('busy');
  try {
    await api(conn.token, method, path, body);
  } catch (e) {
    showMessage(`Could not ${what}: ${e.readable}.`);
    if (e.status === 401) refused(e); // expired, say: get another
  } finally {
    b.disabled = false;
    b.classList.remove('busy');
  }
}

$('rooms').addEventListener('click', (e) => {
  const b = e.target.closest('button');
  if (!b || b.disabled) return;
  const room = b.closest('.room')?.dataset.room;
  const p = b.closest('.participant');
  const t = b.closest('.track');
  if (room === undefined) return;
  if (b.classList.contains('close-room')) {
    if (armed(b, 'Really close?')) act(b, `close room “${room}”`, 'DELETE', paths.room(room));
  } else if (b.classList.contains('remove') && p) {
    const who = p.querySelector('.p-name').textContent;
    if (armed(b, 'Really remove?')) act(b, `remove ${who} from “${room}”`, 'DELETE', paths.participant(room, p.dataset.identity));
  } else if (b.classList.contains('mute') && p && t) {
    const muted = t.dataset.muted !== 'true';
    const who = p.querySelector('.p-name').textContent;
    act(b, `${muted ? 'mute' : 'unmute'} the ${t.dataset.source || t.dataset.kind} of ${who}`, 'POST',
      paths.mute(room, p.dataset.identity, t.dataset.sid), { muted });
  }
});

$('token-form').addEventListener('submit', (e) => {
  e.preventDefault();
  const token = $('token-input').value.trim();
  if (!token) return;
  showMessage('');
  conn.devRetried = true; // a pasted token is not replaced behind the operator's back
  connect(token, 'form');
});

$('btn-forget').addEventListener('click', () => {
  closeStream();
  keepToken('');
  conn.token = '';
  setState('no-token');
  askForToken('Paste an admin token.');
});

// A read-only hook for tests and debugging.
window.parleyDashboard = Object.freeze({
  get state() { return conn.state; },
  rooms: () => model.list(),
  get statsCount() { return stats.count; },
  get stats() { return stats.last && { ...stats.last }; },
  get lastEventId() { return conn.lastEventId; },
  events: () => recent.map((e) => JSON.parse(JSON.stringify(e))),
  get message() { return $('message').hidden ? '' : $('message').textContent; },
});

render();
findToken();
