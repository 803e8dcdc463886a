// Parley demo client. Speaks docs/protocol.md: a publisher connection on
// which we offer our tracks, a subscriber connection on which the server
// offers everyone else's. Plain ES module, no build step.

const $ = (id) => document.getElementById(id);
const params = new URLSearchParams(location.search);

const ERRORS = {
  invalid_token: 'Your join link is not valid. Ask for a new one.',
  token_expired: 'Your join link has expired. Ask for a new one.',
  room_mismatch: 'Your join link is for another room.',
  room_full: 'This room is full. Try again later.',
  too_many_rooms: 'The server cannot open more rooms right now. Try again later.',
  too_many_tracks: 'You are publishing too many tracks.',
  permission_denied: 'Your join link does not allow this.',
  bad_sdp: 'Your browser and the server could not agree on media.',
  negotiation_timeout: 'The connection took too long to set up.',
  shutting_down: 'The server is restarting. Try again in a moment.',
  unsupported_protocol: 'This page is out of date. Reload it.',
};

const LEAVE_REASONS = {
  server_shutdown: 'The server is restarting.',
  duplicate_identity: 'You joined this room from another tab or device.',
  removed: 'You were removed from the room.',
};

// ---- state -------------------------------------------------------------

let ws = null;
let pub = null; // publisher RTCPeerConnection
let sub = null; // subscriber RTCPeerConnection
let self = null; // our ParticipantInfo
let leaving = false;
let connState = 'idle';
let localStream = null; // camera + microphone
let screenStream = null;
let screenSender = null;
const participants = new Map(); // sid -> ParticipantInfo
const tracks = new Map(); // track sid -> {participantSid, info}
const mids = {}; // subscriber mid -> track sid
const senderInfo = new Map(); // RTCRtpSender -> {id (msid track id), source}
const ownTrackSids = new Map(); // our msid track id -> server track sid
const tiles = new Map(); // "psid|group" -> {el, video, stream, flags}
const pendingCandidates = { publisher: [], subscriber: [] };
let pubBusy = false;
let pubAgain = false;
let subChain = Promise.resolve();

window.parley = {
  get state() { return connState; },
  get publisherPC() { return pub; },
  get subscriberPC() { return sub; },
  get self() { return self; },
  participants: () => [...participants.values()],
};

// ---- ui helpers ----------------------------------------------------------

function setState(s, text) {
  connState = s;
  const el = $('conn-state');
  el.dataset.state = s;
  el.textContent = text || s;
}

function showMessage(text, kind = 'error') {
  const el = $('message');
  el.textContent = text;
  el.className = 'message' + (kind === 'info' ? ' info' : '');
  el.hidden = !text;
}

function groupOf(source) {
  return source === 'screen' || source === 'screen_audio' ? 'screen' : 'camera';
}

function tileFor(psid, group, { identity = '', name = '', local = false } = {}) {
  const key = `${psid}|${group}`;
  let t = tiles.get(key);
  if (t) return t;
  const el = document.createElement('div');
  el.className = 'tile' + (local ? ' local' : '');
  el.dataset.participantSid = psid;
  el.dataset.identity = identity;
  el.dataset.source = group;
  const video = document.createElement('video');
  video.autoplay = true;
  video.playsInline = true;
  video.muted = local;
  const stream = new MediaStream();
  video.srcObject = stream;
  const novideo = document.createElement('div');
  novideo.className = 'novideo';
  novideo.textContent = (name || identity || '?').slice(0, 1).toUpperCase();
  const label = document.createElement('div');
  label.className = 'label';
  label.textContent = (name || identity) + (group === 'screen' ? ' (screen)' : '') + (local ? ' (you)' : '');
  const flags = document.createElement('div');
  flags.className = 'flags';
  el.append(video, novideo, label, flags);
  $('tiles').append(el);
  t = { el, video, stream, flags, novideo };
  tiles.set(key, t);
  refreshTile(t);
  return t;
}

function refreshTile(t) {
  const hasVideo = t.stream.getVideoTracks().some((x) => x.readyState === 'live' && !x.muted && !t.videoMuted);
  t.novideo.hidden = hasVideo;
  t.flags.replaceChildren();
  if (t.audioMuted) {
    const s = document.createElement('span');
    s.textContent = 'mic off';
    t.flags.append(s);
  }
}

function removeTile(psid, group) {
  const key = `${psid}|${group}`;
  const t = tiles.get(key);
  if (!t) return;
  t.el.remove();
  tiles.delete(key);
}

function removeTilesOf(psid) {
  for (const key of [...tiles.keys()]) {
    if (key.startsWith(psid + '|')) {
      tiles.get(key).el.remove();
      tiles.delete(key);
    }
  }
}

function playAll() {
  for (const t of tiles.values()) {
    t.video.play().catch(() => { $('enable-audio').hidden = false; });
  }
}

// ---- signaling -----------------------------------------------------------

function send(type, data = {}) {
  if (ws && ws.readyState === WebSocket.OPEN) ws.send(JSON.stringify({ type, data }));
}

async function getToken(room, name) {
  const t = params.get('token');
  if (t) return t;
  const r = await fetch(`/api/dev-token?room=${encodeURIComponent(room)}&name=${encodeURIComponent(name)}`);
  if (r.status === 404) {
    throw new Error('This server needs a join token: open the link your application gave you (it ends in ?token=…).');
  }
  if (!r.ok) throw new Error(`Could not get a token: ${(await r.text()).trim()}`);
  return (await r.json()).token;
}

async function openMedia() {
  const attempts = [{ audio: true, video: true }, { audio: true }, { video: true }];
  let lastErr = null;
  for (const c of attempts) {
    try {
      localStream = await navigator.mediaDevices.getUserMedia(c);
      if (!c.video) showMessage('No camera available: joining with audio only.', 'info');
      return;
    } catch (e) {
      lastErr = e;
    }
  }
  localStream = null;
  const denied = lastErr && (lastErr.name === 'NotAllowedError' || lastErr.name === 'SecurityError');
  showMessage(denied
    ? 'Camera and microphone access was denied: you can watch and listen, but others cannot see or hear you. Allow access in the browser and reload to publish.'
    : 'No camera or microphone found: joining to watch and listen only.', 'info');
}

async function join(room, name) {
  leaving = false;
  $('lobby').hidden = true;
  $('room-label').textContent = `room: ${room}`;
  setState('connecting', 'connecting…');
  let token;
  try {
    token = await getToken(room, name);
  } catch (e) {
    setState('error', 'error');
    showMessage(e.message);
    return;
  }
  await openMedia();
  connect(token, room);
}

function connect(token, room) {
  const scheme = location.protocol === 'https:' ? 'wss' : 'ws';
  ws = new WebSocket(`${scheme}://${location.host}/rtc`);
  ws.onopen = () => send('join', { token, protocol: 1, room });
  ws.onmessage = (ev) => {
    let msg;
    try { msg = JSON.parse(ev.data); } catch { return; }
    handle(msg).catch((e) => console.error('parley:', msg.type, e));
  };
  ws.onclose = (ev) => {
    closePeers();
    if (leaving) return;
    setState('disconnected', 'disconnected');
    if (!$('message').textContent || $('message').classList.contains('info')) {
      showMessage(`Connection to the server was lost${ev.reason ? ` (${ev.reason})` : ''}. Reload to join again.`);
    }
  };
}

async function handle(msg) {
  const d = msg.data || {};
  switch (msg.type) {
    case 'joined': return onJoined(d);
    case 'answer':
      await pub.setRemoteDescription({ type: 'answer', sdp: d.sdp });
      await flushCandidates('publisher');
      pubBusy = false;
      if (pubAgain) { pubAgain = false; negotiatePublisher(); }
      return;
    case 'offer':
      subChain = subChain.then(() => onSubscriberOffer(d)).catch((e) => console.error('parley: subscriber offer', e));
      return;
    case 'candidate': return onCandidate(d);
    case 'participant_joined':
      participants.set(d.participant.sid, d.participant);
      for (const tr of d.participant.tracks || []) tracks.set(tr.sid, { participantSid: d.participant.sid, info: tr });
      tileFor(d.participant.sid, 'camera', d.participant);
      return;
    case 'participant_left':
      participants.delete(d.sid);
      removeTilesOf(d.sid);
      return;
    case 'track_published': return onTrackPublished(d);
    case 'track_unpublished': return onTrackUnpublished(d);
    case 'track_muted': return onTrackMuted(d);
    case 'ping': return send('pong', d);
    case 'leave':
      leaving = true;
      showMessage(LEAVE_REASONS[d.reason] || `You left the room (${d.reason || 'closed'}).`, 'info');
      setState('disconnected', 'disconnected');
      ws.close();
      return;
    case 'error':
      showMessage(ERRORS[d.code] || d.message || d.code);
      if (['invalid_token', 'token_expired', 'room_mismatch', 'room_full', 'too_many_rooms', 'shutting_down', 'unsupported_protocol'].includes(d.code)) {
        setState('error', 'error');
      }
      return;
  }
}

function newPeer(target, iceServers) {
  const config = { iceServers, bundlePolicy: 'max-bundle' };
  if (params.get('relay') === '1') config.iceTransportPolicy = 'relay';
  const pc = new RTCPeerConnection(config);
  pc.onicecandidate = (e) => send('candidate', { target, candidate: e.candidate ? e.candidate.toJSON() : null });
  pc.onconnectionstatechange = () => {
    if (leaving) return;
    const both = [pub, sub].filter(Boolean).map((p) => p.connectionState);
    if (both.includes('failed')) setState('error', 'media failed');
    else if (pc === sub && pc.connectionState === 'connected') setState('connected', 'connected');
    else if (pc === pub && pc.connectionState === 'connected' && connState !== 'connected') setState('connected', 'connected');
  };
  return pc;
}

async function onJoined(d) {
  self = d.participant;
  setState('connecting', 'joined, connecting media…');
  $('controls').hidden = false;
  const ice = d.ice_servers || [];
  pub = newPeer('publisher', ice);
  sub = newPeer('subscriber', ice);
  sub.ontrack = onRemoteTrack;
  for (const p of d.participants || []) {
    participants.set(p.sid, p);
    for (const tr of p.tracks || []) tracks.set(tr.sid, { participantSid: p.sid, info: tr });
    tileFor(p.sid, 'camera', p);
  }
  const mine = tileFor('local', 'camera', { identity: self.identity, name: self.name, local: true });
  mine.el.dataset.participantSid = self.sid;
  if (!d.grants.publish) {
    showMessage('Your link lets you watch and listen only.', 'info');
    if (connState !== 'connected') setState('connected', 'connected (viewer)');
    updateButtons();
    return;
  }
  if (localStream) {
    for (const track of localStream.getTracks()) {
      mine.stream.addTrack(track);
      const tr = pub.addTransceiver(track, { direction: 'sendonly', streams: [localStream] });
      senderInfo.set(tr.sender, { id: track.id, source: track.kind === 'video' ? 'camera' : 'microphone' });
    }
    refreshTile(mine);
    negotiatePublisher();
    fillDevices();
  } else {
    setState('connected', 'connected (watching)');
  }
  updateButtons();
}

function describeTracks() {
  const out = [];
  for (const t of pub.getTransceivers()) {
    const info = senderInfo.get(t.sender);
    if (!info || t.currentDirection === 'stopped' || t.direction === 'stopped' || t.direction === 'inactive') continue;
    const track = t.sender.track;
    out.push({ track_id: info.id, source: info.source, muted: track ? !track.enabled : true });
  }
  return out;
}

async function negotiatePublisher() {
  if (!pub) return;
  if (pubBusy) { pubAgain = true; return; }
  pubBusy = true;
  try {
    const offer = await pub.createOffer();
    await pub.setLocalDescription(offer);
    send('offer', { sdp: pub.localDescription.sdp, tracks: describeTracks() });
  } catch (e) {
    pubBusy = false;
    showMessage(`Could not start publishing: ${e.message}`);
  }
}

async function onSubscriberOffer(d) {
  Object.assign(mids, d.mids || {});
  await sub.setRemoteDescription({ type: 'offer', sdp: d.sdp });
  await flushCandidates('subscriber');
  const answer = await sub.createAnswer();
  await sub.setLocalDescription(answer);
  send('answer', { sdp: sub.localDescription.sdp });
}

async function onCandidate(d) {
  const pc = d.target === 'publisher' ? pub : sub;
  if (!pc || !d.candidate) return;
  if (!pc.remoteDescription) {
    pendingCandidates[d.target].push(d.candidate);
    return;
  }
  await pc.addIceCandidate(d.candidate).catch((e) => console.warn('parley: candidate', e));
}

async function flushCandidates(target) {
  const pc = target === 'publisher' ? pub : sub;
  const list = pendingCandidates[target].splice(0);
  for (const c of list) await pc.addIceCandidate(c).catch((e) => console.warn('parley: candidate', e));
}

function onRemoteTrack(e) {
  const sid = mids[e.transceiver.mid] || e.track.id;
  let owner = tracks.get(sid);
  let psid;
  let source;
  if (owner) {
    psid = owner.participantSid;
    source = owner.info.source;
  } else {
    // Fall back on the stream id: "<participant sid>|<camera or screen>".
    const [p, g] = (e.streams[0] && e.streams[0].id || '|camera').split('|');
    psid = p;
    source = g === 'screen' ? 'screen' : (e.track.kind === 'video' ? 'camera' : 'microphone');
  }
  const p = participants.get(psid) || { identity: '', name: '' };
  const t = tileFor(psid, groupOf(source), p);
  for (const old of t.stream.getTracks()) {
    if (old.kind === e.track.kind) t.stream.removeTrack(old);
  }
  t.stream.addTrack(e.track);
  t.trackSids = t.trackSids || new Set();
  t.trackSids.add(sid);
  if (owner && owner.info.muted) {
    if (e.track.kind === 'video') t.videoMuted = true; else t.audioMuted = true;
  }
  e.track.onmute = e.track.onunmute = e.track.onended = () => refreshTile(t);
  refreshTile(t);
  t.video.play().catch(() => { $('enable-audio').hidden = false; });
}

function onTrackPublished(d) {
  tracks.set(d.track.sid, { participantSid: d.participant_sid, info: d.track });
  if (self && d.participant_sid === self.sid) {
    ownTrackSids.set(d.track.cid, d.track.sid);
    return;
  }
  const p = participants.get(d.participant_sid);
  if (p) {
    p.tracks = (p.tracks || []).filter((x) => x.sid !== d.track.sid).concat([d.track]);
    tileFor(p.sid, groupOf(d.track.source), p);
  }
}

function onTrackUnpublished(d) {
  const entry = tracks.get(d.track_sid);
  tracks.delete(d.track_sid);
  if (!entry || (self && d.participant_sid === self.sid)) return;
  const group = groupOf(entry.info.source);
  const t = tiles.get(`${d.participant_sid}|${group}`);
  if (!t) return;
  const kind = entry.info.kind;
  for (const tr of t.stream.getTracks()) if (tr.kind === kind) t.stream.removeTrack(tr);
  if (t.trackSids) t.trackSids.delete(d.track_sid);
  if (group === 'screen' && t.stream.getTracks().length === 0) removeTile(d.participant_sid, 'screen');
  else refreshTile(t);
}

function onTrackMuted(d) {
  const entry = tracks.get(d.track_sid);
  if (!entry) return;
  entry.info.muted = d.muted;
  if (self && d.participant_sid === self.sid) return;
  const t = tiles.get(`${d.participant_sid}|${groupOf(entry.info.source)}`);
  if (!t) return;
  if (entry.info.kind === 'video') t.videoMuted = d.muted; else t.audioMuted = d.muted;
  refreshTile(t);
}

// ---- local controls ------------------------------------------------------

function localTrack(kind) {
  return localStream ? localStream.getTracks().find((t) => t.kind === kind) : null;
}

function senderFor(source) {
  for (const [s, info] of senderInfo) if (info.source === source) return [s, info];
  return [null, null];
}

function setMuted(kind, muted) {
  const track = localTrack(kind);
  if (!track) return;
  track.enabled = !muted;
  const [, info] = senderFor(kind === 'video' ? 'camera' : 'microphone');
  const sid = info && ownTrackSids.get(info.id);
  if (sid) send('mute', { track_sid: sid, muted });
  const mine = tiles.get('local|camera');
  if (mine) {
    if (kind === 'video') mine.videoMuted = muted; else mine.audioMuted = muted;
    refreshTile(mine);
  }
  updateButtons();
}

function updateButtons() {
  const mic = localTrack('audio');
  const cam = localTrack('video');
  $('btn-mic').disabled = !mic;
  $('btn-cam').disabled = !cam;
  $('btn-mic').setAttribute('aria-pressed', String(!!mic && mic.enabled));
  $('btn-mic').textContent = mic && mic.enabled ? 'Mic on' : 'Mic off';
  $('btn-cam').setAttribute('aria-pressed', String(!!cam && cam.enabled));
  $('btn-cam').textContent = cam && cam.enabled ? 'Camera on' : 'Camera off';
  $('btn-screen').setAttribute('aria-pressed', String(!!screenSender));
  $('btn-screen').textContent = screenSender ? 'Stop sharing' : 'Share screen';
  $('btn-screen').disabled = !pub || !(self && self.sid) || !navigator.mediaDevices.getDisplayMedia;
}

async function fillDevices() {
  const devices = await navigator.mediaDevices.enumerateDevices().catch(() => []);
  for (const [id, kind] of [['sel-cam', 'videoinput'], ['sel-mic', 'audioinput']]) {
    const sel = $(id);
    const current = localTrack(kind === 'videoinput' ? 'video' : 'audio');
    const currentId = current && current.getSettings().deviceId;
    sel.replaceChildren();
    devices.filter((dv) => dv.kind === kind).forEach((dv, i) => {
      const o = document.createElement('option');
      o.value = dv.deviceId;
      o.textContent = dv.label || `${kind === 'videoinput' ? 'Camera' : 'Microphone'} ${i + 1}`;
      o.selected = dv.deviceId === currentId;
      sel.append(o);
    });
    sel.disabled = sel.options.length < 2;
  }
}

async function switchDevice(kind, deviceId) {
  const old = localTrack(kind);
  if (!old || !deviceId) return;
  try {
    const s = await navigator.mediaDevices.getUserMedia(kind === 'video' ? { video: { deviceId: { exact: deviceId } } } : { audio: { deviceId: { exact: deviceId } } });
    const track = s.getTracks()[0];
    track.enabled = old.enabled;
    const [sender] = senderFor(kind === 'video' ? 'camera' : 'microphone');
    if (sender) await sender.replaceTrack(track);
    localStream.removeTrack(old);
    localStream.addTrack(track);
    old.stop();
    const mine = tiles.get('local|camera');
    if (mine) {
      mine.stream.removeTrack(old);
      mine.stream.addTrack(track);
      refreshTile(mine);
    }
  } catch (e) {
    showMessage(`Could not switch device: ${e.message}`);
  }
}

async function startScreen() {
  try {
    screenStream = await navigator.mediaDevices.getDisplayMedia({ video: true, audio: false });
  } catch (e) {
    if (e.name !== 'NotAllowedError') showMessage(`Could not share the screen: ${e.message}`);
    return;
  }
  const track = screenStream.getVideoTracks()[0];
  const tr = pub.addTransceiver(track, { direction: 'sendonly', streams: [screenStream] });
  screenSender = tr.sender;
  senderInfo.set(screenSender, { id: track.id, source: 'screen' });
  const t = tileFor('local', 'screen', { identity: self.identity, name: self.name, local: true });
  t.el.dataset.participantSid = self.sid;
  t.stream.addTrack(track);
  refreshTile(t);
  track.onended = stopScreen;
  updateButtons();
  negotiatePublisher();
}

function stopScreen() {
  if (!screenSender) return;
  const info = senderInfo.get(screenSender);
  const sid = info && ownTrackSids.get(info.id);
  if (sid) send('unpublish', { track_sid: sid });
  const tr = pub.getTransceivers().find((t) => t.sender === screenSender);
  senderInfo.delete(screenSender);
  if (tr) tr.stop();
  for (const t of screenStream.getTracks()) t.stop();
  screenSender = null;
  screenStream = null;
  removeTile('local', 'screen');
  updateButtons();
  negotiatePublisher();
}

function closePeers() {
  for (const pc of [pub, sub]) if (pc) pc.close();
  pub = sub = null;
}

function leave() {
  leaving = true;
  send('leave');
  if (ws) ws.close(1000, 'left');
  closePeers();
  for (const s of [localStream, screenStream]) if (s) for (const t of s.getTracks()) t.stop();
  localStream = screenStream = screenSender = null;
  for (const key of [...tiles.keys()]) { tiles.get(key).el.remove(); tiles.delete(key); }
  participants.clear();
  tracks.clear();
  senderInfo.clear();
  $('controls').hidden = true;
  setState('disconnected', 'left');
  showMessage('You left the room.', 'info');
  showLobby();
}

function showLobby() {
  $('lobby').hidden = false;
  $('lobby-room').value = params.get('room') || '';
  $('lobby-name').value = params.get('name') || localStorage.getItem('parley.name') || '';
}

// ---- start ---------------------------------------------------------------

$('lobby').addEventListener('submit', (e) => {
  e.preventDefault();
  const room = $('lobby-room').value.trim();
  const name = $('lobby-name').value.trim();
  localStorage.setItem('parley.name', name);
  const q = new URLSearchParams(location.search);
  q.set('room', room);
  q.set('name', name);
  history.replaceState(null, '', `?${q}`);
  showMessage('');
  join(room, name);
});
$('btn-mic').addEventListener('click', () => { const t = localTrack('audio'); if (t) setMuted('audio', t.enabled); });
$('btn-cam').addEventListener('click', () => { const t = localTrack('video'); if (t) setMuted('video', t.enabled); });
$('btn-screen').addEventListener('click', () => (screenSender ? stopScreen() : startScreen()));
$('btn-leave').addEventListener('click', leave);
$('sel-cam').addEventListener('change', (e) => switchDevice('video', e.target.value));
$('sel-mic').addEventListener('change', (e) => switchDevice('audio', e.target.value));
$('enable-audio').addEventListener('click', () => { $('enable-audio').hidden = true; playAll(); });
navigator.mediaDevices?.addEventListener?.('devicechange', fillDevices);

const room = params.get('room');
if (room) {
  join(room, params.get('name') || localStorage.getItem('parley.name') || 'Guest');
} else {
  showLobby();
}
