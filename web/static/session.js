// One signaling session (docs/protocol.md): the WebSocket and its two peer
// connections. The publisher connection carries our tracks and we offer on
// it; the subscriber connection carries everyone else's and the server
// offers on it, so negotiation never glares. When the socket drops, the
// Session stays (its connections, tracks and data channels go on) and the
// page resumes it on a new socket; a Session that cannot be resumed ends,
// and the page joins afresh with a new one. The local media belongs to the
// page and survives both.

import { DataLink } from './datalink.js';
import { IceWatch } from './icewatch.js';
import { PROTOCOL, Signal, signalURL } from './signal.js';
import { Dynacast, describeLayers, sendEncodings } from './simulcast.js';
import * as ui from './ui.js';
import { Viewer } from './viewer.js';

const ERRORS = {
  bad_request: 'The server did not understand a message from this page.',
  unknown_type: 'The server did not understand a message from this page.',
  unsupported_protocol: 'This page is out of date for the server. Reload it.',
  not_joined: 'The connection was refused before joining.',
  invalid_token: 'Your join token is not valid. Ask for a new link.',
  token_expired: 'Your join token has expired. Ask for a new link.',
  room_mismatch: 'Your join token is for another room.',
  room_full: 'This room is full. Try again later.',
  too_many_rooms: 'The server cannot open more rooms right now. Try again later.',
  too_many_tracks: 'You are publishing more tracks than the server allows.',
  permission_denied: 'Your join token does not allow this.',
  bad_sdp: 'Your browser and the server could not agree on the media.',
  negotiation_timeout: 'Setting up the media connection took too long.',
  shutting_down: 'The server is shutting down. Try again in a moment.',
  slow_client: 'This page did not keep up with the messages of the room.',
  draining: 'The server is restarting and takes no new participants. Trying again.',
  rate_limited: 'This page sent the server too many messages.',
  resume_failed: 'The session could not be resumed.',
  internal: 'The server had a problem.',
  // Several servers (docs/scaling.md).
  cluster_unavailable: 'The servers cannot reach their shared state right now.',
  no_node_available: 'Every server is full or restarting.',
  node_unavailable: "The room's server does not answer; the room is moving to another server.",
  room_moved: 'The room is moving to another server.',
};
// Errors after which joining again with the same token cannot work.
const FATAL = new Set(['unsupported_protocol', 'not_joined', 'invalid_token', 'token_expired', 'room_mismatch',
  'room_full', 'too_many_rooms']);
// Errors of several servers that refuse a join (or resume) for now: the
// same request works again in a few seconds (the page backs off).
export const CLUSTER_RETRY = new Set(['cluster_unavailable', 'no_node_available', 'node_unavailable']);
// Errors that refuse our last publisher offer: no answer will come.
const OFFER_REFUSED = new Set(['bad_request', 'bad_sdp', 'permission_denied', 'too_many_tracks']);

const LEAVE_REASONS = {
  server_shutdown: 'The server is shutting down.',
  duplicate_identity: 'You joined this room from another tab or device.',
  removed: 'You were removed from the room.',
  room_closed: 'The room was closed.',
  room_moved: 'The room is moving to another server.',
};

const ANSWER_TIMEOUT_MS = 15000;
// A new socket that is not resumed within this long is given up.
const CONNECT_TIMEOUT_MS = 10000;
// The server's default signaling.resume_grace, when joined does not say.
const DEFAULT_GRACE_MS = 30000;
// After a resume, the answer to our ping shows that every message the
// server kept has arrived; it waits no longer than this.
const BARRIER_TIMEOUT_MS = 3000;
// A socket that leaves our ping unanswered for this many ping intervals
// is taken for dead (the server's pong_timeout is three by default).
const SILENT_INTERVALS = 3;
// The server notices a dead socket within about this many ping intervals
// (signaling.pong_timeout, 30 s by default), and its grace period starts
// then: it may start well after the page noticed the drop.
const DETECT_INTERVALS = 3;

export const groupOf = (source) => (source === 'screen' || source === 'screen_audio' ? 'screen' : 'camera');

// msidTracks maps each mid of an SDP to the track id of its a=msid line:
// the id the server knows a published track by.
function msidTracks(sdp) {
  const out = {};
  for (const section of sdp.split(/\r?\n(?=m=)/).slice(1)) {
    const mid = /^a=mid:(\S+)/m.exec(section);
    const msid = /^a=msid:\S+ (\S+)/m.exec(section);
    if (mid && msid) out[mid[1]] = msid[1];
  }
  return out;
}

// Session tells its host (the page) what happens:
//   host.joined(session, d)    the server accepted us; the connections exist
//   host.dropped(session, ev)  the socket dropped; the session waits for reconnect()
//   host.resumed(session, d)   reconnect() worked: the session goes on
//   host.closed(session, ev)   the session ended (socket closed, not resumable)
//   host.changed()             a connection changed state
//   host.updated(session)      an administrator changed our grants or name
//   host.ownMuted(source, muted) the server says one of our tracks is (un)muted
//   host.left(session, d)      the server says a participant left (participant_left)
//   host.dataOpen(session)     the "parley" data channel opened
//   host.data(session, msg)    a message arrived on a data channel
//   host.dataClosed(session)   the data channels closed
//   host.speakers(session, list) who speaks now, loudest first (speakers)
//   host.quality()             the video quality the page asks for
export class Session {
  constructor(token, room, host) {
    this.host = host;
    this.token = token;
    this.room = room;
    this.self = null;
    this.grants = null;
    this.pub = null;
    this.sub = null;
    this.data = null; // the DataLink, from joined on
    this.participants = new Map(); // sid -> ParticipantInfo
    this.tracks = new Map(); // track sid -> {psid, info}
    this.mids = {}; // subscriber mid -> track sid
    this.senders = new Map(); // our RTCRtpSender -> {source, cid}
    this.ownSids = new Map(); // our track cid -> server track sid
    this.dynacast = new Dynacast(); // applies set_layers to our senders
    this.layersWanted = new Map(); // set_layers for a track sid we do not know yet
    this.speakers = []; // the last speakers message: [{sid, identity, level}]
    // track_settings for the remote video tiles.
    this.viewer = new Viewer({ send: (type, data) => this.send(type, data), quality: host.quality ? host.quality() : 'auto' });
    this.pending = { publisher: [], subscriber: [] }; // candidates before their description
    this.pubBusy = false;
    this.pubAgain = false;
    this.pubRestart = false; // the next publisher offer restarts ICE
    this.pubOwed = false; // an offer waits for the socket to come back
    this.answer = null; // the offer that waits for its answer (see exchange)
    this.ended = false;
    this.fatal = false;
    // Resuming (docs/protocol.md, "Resuming a session").
    this.resumeToken = '';
    this.graceMs = DEFAULT_GRACE_MS;
    this.droppedAt = 0; // when the socket dropped; 0 while it is up
    this.resuming = false; // a resume is under way on the current socket
    this.resumeFailed = false; // the server refused to resume: join afresh
    this.gone = false; // the server sent leave: the session is over
    // Several servers: moved is a room_moved (leave or error): join again
    // with the same token; retryCode a CLUSTER_RETRY refusal of the join
    // or resume: try again after a backoff.
    this.moved = false;
    this.retryCode = '';
    this.resumes = 0;
    this.connectTimer = 0;
    this.keepalive = 0;
    this.pingMs = 10000;
    this.pingedAt = 0; // when the keepalive sent its last ping
    this.barrier = null; // {ts, done} while a resume waits for the kept messages
    this.owed = { answer: false, candidates: [], mutes: new Map() }; // what the socket lost
    // The mute states we asked for, per track sid, in order: the server
    // echoes each in a track_muted, and only an echo that is not one of
    // ours comes from an administrator. (Without this, mute then unmute
    // clicked faster than a round trip was undone by the first echo.)
    this.asked = new Map();
    this.ice = new IceWatch({
      peer: (target) => (target === 'publisher' ? this.pub : this.sub),
      canSignal: () => this.live,
      restart: (target) => this.restartIce(target),
    });
    this.signal = new Signal(signalURL(), {
      onOpen: () => this.opened(),
      onMessage: (type, data) => this.handle(type, data),
      onClose: (ev) => this.socketClosed(ev),
    });
  }

  // live: the session has a socket the server took (joined or resumed).
  get live() {
    return !this.ended && this.signal.ready;
  }

  // online: chat and presence may be sent: the socket is live and the
  // "parley" data channel open. While the socket is away the page counts
  // as offline (the server shows it so), though the channel stays.
  get online() {
    return this.live && !!this.data && this.data.open;
  }

  // send sends one message and says whether it went out (not while the
  // socket is down).
  send(type, data) {
    return this.signal.send(type, data);
  }

  opened() {
    if (this.resuming) this.signal.sendNow('resume', { token: this.resumeToken, protocol: PROTOCOL });
    else this.signal.sendNow('join', { token: this.token, protocol: PROTOCOL, room: this.room });
  }

  async handle(type, d) {
    if (this.ended) return undefined;
    switch (type) {
      case 'joined': return this.onJoined(d);
      case 'resumed': return this.onResumed(d);
      case 'answer': return this.onAnswer(d);
      case 'offer': return this.onOffer(d);
      case 'candidate': return this.onCandidate(d);
      case 'participant_joined': return this.addParticipant(d.participant);
      case 'participant_left':
        this.host.left(this, d);
        return this.removeParticipant(d.sid);
      case 'track_published': return this.onTrackPublished(d.participant_sid, d.track);
      case 'track_unpublished': return this.onTrackUnpublished(d);
      case 'track_muted': return this.onTrackMuted(d);
      case 'participant_updated': return this.onUpdated(d);
      case 'set_layers': return this.onSetLayers(d);
      case 'speakers': return this.onSpeakers(d);
      case 'ping': return this.signal.sendNow('pong', { ts: d.ts });
      case 'pong': return this.onPong(d);
      case 'leave': return this.onLeave(d);
      case 'error': return this.onError(d);
      default: console.warn('parley: unknown message', type, d);
    }
    return undefined;
  }

  // ---- joining ----

  onJoined(d) {
    if (this.self) return; // joined once already
    this.self = d.participant;
    this.grants = d.grants || {};
    this.keepResume(d);
    this.signal.ready = true;
    const iceServers = d.ice_servers || [];
    this.pub = this.newPeer('publisher', iceServers);
    this.sub = this.newPeer('subscriber', iceServers);
    this.sub.ontrack = (e) => this.onRemoteTrack(e);
    // The server opens the data channels on the subscriber connection.
    this.data = new DataLink({
      onOpen: () => this.host.dataOpen(this),
      onMessage: (msg) => this.host.data(this, msg),
      onClose: () => this.host.dataClosed(this),
    });
    this.sub.ondatachannel = (e) => this.data.attach(e.channel);
    for (const p of d.participants || []) this.addParticipant(p);
    this.startKeepalive();
    this.host.joined(this, d);
  }

  // keepResume notes what joined or resumed says about resuming; without a
  // resume_token (an older server) a dropped socket ends the session.
  keepResume(d) {
    if (d.resume_token) this.resumeToken = d.resume_token;
    if (d.resume_grace_ms > 0) this.graceMs = d.resume_grace_ms;
    if (d.ping_interval_ms > 0) this.pingMs = d.ping_interval_ms;
  }

  newPeer(target, iceServers) {
    const config = { iceServers, bundlePolicy: 'max-bundle' };
    // ?relay=1 forces media through TURN: a way to check a deployment's relay.
    if (new URLSearchParams(location.search).get('relay') === '1') config.iceTransportPolicy = 'relay';
    const pc = new RTCPeerConnection(config);
    pc.addEventListener('icecandidate', (e) => {
      const msg = { target, candidate: e.candidate ? e.candidate.toJSON() : null };
      if (!this.send('candidate', msg)) this.owed.candidates.push(msg);
    });
    pc.addEventListener('connectionstatechange', () => {
      if (!this.ended) this.ice.changed(target);
      this.host.changed();
    });
    pc.addEventListener('signalingstatechange', () => this.host.changed());
    return pc;
  }

  addParticipant(p) {
    if (!p || (this.self && p.sid === this.self.sid)) return;
    this.participants.set(p.sid, p);
    ui.ensureTile(ui.tileKey(p.sid, 'camera'), { psid: p.sid, identity: p.identity, name: p.name, source: 'camera' });
    for (const tr of p.tracks || []) this.onTrackPublished(p.sid, tr);
  }

  removeParticipant(sid) {
    this.participants.delete(sid);
    for (const [tsid, t] of this.tracks) if (t.psid === sid) this.tracks.delete(tsid);
    ui.removeTiles((t) => !t.local && t.el.dataset.participantSid === sid);
  }

  // ---- the socket drops and comes back ----

  // socketClosed: a dropped socket leaves a resumable session waiting for
  // reconnect(); otherwise the session ends.
  socketClosed(ev) {
    if (this.ended) return;
    clearTimeout(this.connectTimer);
    clearInterval(this.keepalive);
    if (ev.code === 4001) {
      // Another socket resumed this session ("resumed elsewhere"): it is
      // theirs now, and joining again would take it back.
      this.fatal = true;
      ui.showMessage('This session was taken over by another connection.', 'info');
    }
    const resumable = !!this.self && !!this.resumeToken && !this.fatal && !this.gone && !this.resumeFailed;
    if (!resumable) {
      this.closed(ev);
      return;
    }
    if (!this.droppedAt) this.droppedAt = Date.now();
    this.resuming = false;
    this.barrier = null;
    if (this.answer) clearTimeout(this.answer.timer); // no answer can come now
    this.ice.stop();
    this.host.dropped(this, ev);
  }

  // graceOver: the server has certainly ended the session (its grace
  // period has passed since the socket dropped, even if the server noticed
  // the drop late); resuming is pointless. Before that a resume is tried,
  // and the server's resume_failed ends the session at once.
  graceOver() {
    return this.graceLeft() <= 0;
  }

  // graceLeft: ms until graceOver (Infinity while the socket is up).
  graceLeft() {
    if (!this.droppedAt) return Infinity;
    return this.droppedAt + this.graceMs + DETECT_INTERVALS * this.pingMs - Date.now();
  }

  // reconnect opens a new socket that resumes the session; the host hears
  // resumed, dropped (try again later) or closed (join afresh).
  reconnect() {
    if (this.ended || this.live) return;
    this.resuming = true;
    this.retryCode = '';
    this.signal.connect();
    clearTimeout(this.connectTimer);
    this.connectTimer = setTimeout(() => {
      if (!this.live) this.signal.abort('no answer from the server');
    }, CONNECT_TIMEOUT_MS);
  }

  // onResumed: the server kept the session. The participants are as they
  // are now; the messages kept meanwhile follow, in order, and are handled
  // as usual. What the socket lost is sent again.
  onResumed(d) {
    if (!this.resuming) {
      console.warn('parley: resumed without a resume');
      return;
    }
    this.resuming = false;
    this.retryCode = '';
    this.droppedAt = 0;
    this.resumes++;
    clearTimeout(this.connectTimer);
    this.keepResume(d);
    this.signal.ready = true;
    if (d.grants) this.grants = d.grants;
    if (d.participant) this.self = { ...this.self, ...d.participant };
    for (const pc of [this.pub, this.sub]) {
      try {
        pc.setConfiguration({ ...pc.getConfiguration(), iceServers: d.ice_servers || [] });
      } catch (e) {
        console.warn('parley: new ICE servers', e);
      }
    }
    this.reconcile(d.participant, d.participants || []);
    // Our answer to a subscriber offer that did not go out. The server
    // sends no other offer before it has it.
    if (this.owed.answer && this.sub.signalingState === 'stable' && this.sub.localDescription) {
      this.owed.answer = !this.send('answer', { sdp: this.sub.localDescription.sdp });
    }
    const candidates = this.owed.candidates.splice(0);
    for (const msg of candidates) this.send('candidate', msg);
    this.startKeepalive();
    this.host.resumed(this, d);
    this.afterResume(this.resumes);
  }

  // reconcile brings participants and tracks to what resumed says: who
  // left meanwhile goes, who came appears, tracks come, go and (un)mute.
  reconcile(self, others) {
    const now = new Map(others.map((p) => [p.sid, p]));
    for (const sid of [...this.participants.keys()]) if (!now.has(sid)) this.removeParticipant(sid);
    for (const p of [self, ...others]) {
      if (!p) continue;
      const live = new Set((p.tracks || []).map((t) => t.sid));
      for (const [tsid, t] of [...this.tracks]) {
        if (t.psid === p.sid && !live.has(tsid)) this.onTrackUnpublished({ participant_sid: p.sid, track_sid: tsid });
      }
    }
    // Our own tracks as the server has them; a mute we changed meanwhile
    // is sent again once the kept messages are in (afterResume).
    for (const tr of (self && self.tracks) || []) {
      this.tracks.set(tr.sid, { psid: self.sid, info: tr });
      this.ownSids.set(tr.cid, tr.sid);
      this.applyWantedLayers(tr.sid);
    }
    for (const p of others) this.addParticipant(p);
  }

  // afterResume waits until the kept messages are in (the server answers
  // our ping after them), then retries what the drop interrupted: an offer
  // that got no answer is sent again, mutes set meanwhile are sent, and a
  // connection that is not connected has its ICE restarted.
  async afterResume(resumes) {
    await new Promise((done) => {
      const ts = Date.now();
      this.barrier = { ts, done };
      if (!this.send('ping', { ts })) done();
      setTimeout(done, BARRIER_TIMEOUT_MS);
    });
    this.barrier = null;
    if (this.ended || !this.live || resumes !== this.resumes) return;
    for (const [sid, muted] of this.owed.mutes) {
      const t = this.tracks.get(sid);
      if (t && t.info.muted !== muted) this.sendMute(sid, muted);
    }
    this.owed.mutes.clear();
    // The offer stays our local description: the server may never have
    // had it, or applied it and its answer was lost. The same offer suits
    // both (a rolled back, new offer would renumber new m-lines, which a
    // server that applied the lost one refuses).
    if (this.answer) this.answer.send();
    else if (this.pubOwed) this.negotiate();
    // What the tiles told while the socket was down was lost.
    this.viewer.resend();
    this.ice.checkAll(true);
  }

  onPong(d) {
    if (this.barrier && d.ts === this.barrier.ts) this.barrier.done();
  }

  // startKeepalive pings the server every ping interval; a socket that
  // leaves a ping unanswered for a few intervals is dead (a laptop that
  // slept, a network that changed, a half-open connection): it is dropped
  // and the session resumed.
  startKeepalive() {
    clearInterval(this.keepalive);
    this.pingedAt = 0;
    this.keepalive = setInterval(() => {
      if (!this.live) return;
      const now = Date.now();
      const unanswered = this.pingedAt && this.signal.heardAt < this.pingedAt;
      if (!unanswered) {
        this.pingedAt = now;
        this.send('ping', { ts: now });
      } else if (now - this.pingedAt > SILENT_INTERVALS * this.pingMs) {
        this.signal.abort('the server stopped answering');
      }
    }, this.pingMs);
  }

  // restartIce restarts ICE on one connection (IceWatch decides when):
  // we offer anew on the publisher connection, the server on the other.
  restartIce(target) {
    if (target === 'publisher') {
      this.pubRestart = true;
      this.negotiate();
    } else {
      this.send('ice_restart', { target: 'subscriber' });
    }
  }

  // ---- publishing ----

  // addSender publishes a track; the camera as simulcast (three RID
  // encodings), or as one encoding where the browser refuses that.
  addSender(track, stream, source) {
    const init = { direction: 'sendonly', streams: [stream] };
    let tr = null;
    if (source === 'camera' && track.kind === 'video') {
      try {
        tr = this.pub.addTransceiver(track, { ...init, sendEncodings: sendEncodings() });
      } catch (e) {
        console.warn('parley: no simulcast in this browser; the camera is sent as one layer', e);
      }
    }
    if (!tr) tr = this.pub.addTransceiver(track, init);
    this.senders.set(tr.sender, { source, cid: track.id });
    return tr;
  }

  senderFor(source) {
    for (const [sender, info] of this.senders) if (info.source === source) return { sender, info };
    return null;
  }

  // mute tells the server one of our tracks is (un)muted; said while the
  // socket is down, it is said again after the resume.
  mute(trackSid, muted) {
    if (this.sendMute(trackSid, muted)) this.owed.mutes.delete(trackSid);
    else this.owed.mutes.set(trackSid, muted);
  }

  sendMute(trackSid, muted) {
    if (!this.send('mute', { track_sid: trackSid, muted })) return false;
    const q = this.asked.get(trackSid) || [];
    q.push(muted);
    this.asked.set(trackSid, q.slice(-16));
    return true;
  }

  // negotiate sends an offer on the publisher connection, one at a time:
  // a change made while an offer is out is sent once its answer is in.
  // While the socket is down the offer waits for the resume.
  async negotiate() {
    if (!this.pub || this.ended) return;
    if (this.pubBusy) {
      this.pubAgain = true;
      return;
    }
    this.pubBusy = true;
    try {
      do {
        this.pubAgain = false;
        if (!this.live) {
          this.pubOwed = true; // afterResume negotiates
          return;
        }
        this.pubOwed = false;
        const iceRestart = this.pubRestart;
        this.pubRestart = false;
        const offer = await this.pub.createOffer(iceRestart ? { iceRestart } : undefined);
        await this.pub.setLocalDescription(offer);
        const sdp = await this.exchange();
        if (this.ended) return;
        await this.pub.setRemoteDescription({ type: 'answer', sdp });
        await this.flushCandidates('publisher');
      } while (this.pubAgain && !this.ended);
    } catch (e) {
      if (this.ended) return;
      console.error('parley: publish', e);
      ui.showMessage(`Could not publish your media: ${e.message}`);
      if (this.pub.signalingState === 'have-local-offer') {
        await this.pub.setLocalDescription({ type: 'rollback' }).catch(() => {});
      }
    } finally {
      this.answer = null;
      this.pubBusy = false;
    }
  }

  // exchange sends our local offer and resolves with the server's answer.
  // The offer is sent again (send()) after a resume that did not bring
  // its answer; the timeout runs only while the socket is up.
  exchange() {
    return new Promise((resolve, reject) => {
      const entry = { timer: 0 };
      const finish = (f) => (v) => {
        clearTimeout(entry.timer);
        if (this.answer === entry) this.answer = null;
        f(v);
      };
      entry.resolve = finish(resolve);
      entry.reject = finish(reject);
      entry.send = () => {
        clearTimeout(entry.timer);
        if (this.answer !== entry || this.ended) return;
        const sdp = this.pub.localDescription.sdp;
        const tracks = this.describeTracks(msidTracks(sdp));
        if (!this.send('offer', { sdp, tracks })) return; // sent after the resume
        entry.timer = setTimeout(() => entry.reject(new Error('the server did not answer the offer')), ANSWER_TIMEOUT_MS);
      };
      this.answer = entry;
      entry.send();
    });
  }

  // describeTracks lists what the offer sends: every live sendonly
  // transceiver, by the track id of its a=msid line.
  describeTracks(msids) {
    const out = [];
    for (const t of this.pub.getTransceivers()) {
      const info = this.senders.get(t.sender);
      if (!info || t.stopped || t.direction !== 'sendonly' || !t.sender.track) continue;
      if (t.mid && msids[t.mid]) info.cid = msids[t.mid];
      const desc = { track_id: info.cid, source: info.source, muted: !t.sender.track.enabled };
      const layers = info.source === 'camera' && t.sender.track.kind === 'video' ? describeLayers(t.sender) : undefined;
      if (layers) desc.layers = layers;
      out.push(desc);
    }
    return out;
  }

  onAnswer(d) {
    if (this.answer) this.answer.resolve(d.sdp);
    else console.warn('parley: answer without an offer');
  }

  // ---- subscribing ----

  async onOffer(d) {
    Object.assign(this.mids, d.mids || {});
    try {
      await this.sub.setRemoteDescription({ type: 'offer', sdp: d.sdp });
      await this.flushCandidates('subscriber');
      const answer = await this.sub.createAnswer();
      await this.sub.setLocalDescription(answer);
      // Not sent (the socket is down): sent when it is resumed.
      this.owed.answer = !this.send('answer', { sdp: this.sub.localDescription.sdp });
    } catch (e) {
      console.error('parley: subscriber offer', e);
      ui.showMessage(`Could not receive the others' media: ${e.message}`);
    }
  }

  async onCandidate(d) {
    const pc = d.target === 'publisher' ? this.pub : d.target === 'subscriber' ? this.sub : null;
    if (!pc || !d.candidate || !d.candidate.candidate) return;
    if (!pc.remoteDescription || (pc === this.pub && this.pubBusy)) {
      this.pending[d.target].push(d.candidate);
      return;
    }
    await pc.addIceCandidate(d.candidate).catch((e) => console.warn('parley: candidate', e));
  }

  async flushCandidates(target) {
    const pc = target === 'publisher' ? this.pub : this.sub;
    const list = this.pending[target];
    while (list.length > 0) {
      await pc.addIceCandidate(list.shift()).catch((e) => console.warn('parley: candidate', e));
    }
  }

  onRemoteTrack(e) {
    const sid = this.mids[e.transceiver && e.transceiver.mid];
    const known = sid && this.tracks.get(sid);
    let psid;
    let source;
    if (known) {
      psid = known.psid;
      source = known.info.source;
    } else {
      // The stream id is "<participant sid>|<camera or screen>".
      const [p, g] = ((e.streams[0] && e.streams[0].id) || '').split('|');
      psid = p;
      source = g === 'screen' ? 'screen' : e.track.kind === 'video' ? 'camera' : 'microphone';
    }
    if (!psid) return;
    const p = this.participants.get(psid) || {};
    const group = groupOf(source);
    const t = ui.ensureTile(ui.tileKey(psid, group), { psid, identity: p.identity, name: p.name, source: group });
    if (known) {
      if (e.track.kind === 'video') t.videoMuted = known.info.muted;
      else t.audioMuted = known.info.muted;
    }
    ui.setTileTrack(t, e.track);
    if (e.track.kind === 'video' && sid) this.viewer.watch(t, sid);
  }

  // ---- room events ----

  onTrackPublished(psid, track) {
    this.tracks.set(track.sid, { psid, info: track });
    if (this.self && psid === this.self.sid) {
      this.ownSids.set(track.cid, track.sid);
      this.applyWantedLayers(track.sid);
      // A mute toggled before the server knew the track.
      const s = [...this.senders.values()].find((i) => i.cid === track.cid);
      const local = s && this.senderFor(s.source)?.sender.track;
      if (local && local.enabled === track.muted) this.mute(track.sid, !local.enabled);
      return;
    }
    const p = this.participants.get(psid);
    if (!p) return;
    const group = groupOf(track.source);
    const t = ui.ensureTile(ui.tileKey(psid, group), { psid, identity: p.identity, name: p.name, source: group });
    if (track.kind === 'video') t.videoMuted = track.muted;
    else t.audioMuted = track.muted;
    ui.refreshTile(t);
  }

  onTrackUnpublished(d) {
    const entry = this.tracks.get(d.track_sid);
    this.tracks.delete(d.track_sid);
    if (!entry) return;
    if (this.self && d.participant_sid === this.self.sid) {
      this.ownSids.delete(entry.info.cid);
      return;
    }
    const group = groupOf(entry.info.source);
    const t = ui.getTile(ui.tileKey(d.participant_sid, group));
    if (!t) return;
    if (entry.info.kind === 'video') this.viewer.watch(t, '');
    ui.removeTileTrack(t, entry.info.kind);
    const left = [...this.tracks.values()].some((x) => x.psid === d.participant_sid && groupOf(x.info.source) === group);
    if (group === 'screen' && !left) ui.removeTile(t.key);
  }

  onTrackMuted(d) {
    const entry = this.tracks.get(d.track_sid);
    if (!entry) return;
    entry.info.muted = d.muted;
    if (this.self && d.participant_sid === this.self.sid) {
      // The echo of a mute we asked for: nothing to do.
      const q = this.asked.get(d.track_sid);
      if (q && q.length && q[0] === d.muted) {
        q.shift();
        return;
      }
      // An administrator may mute us: follow the server.
      this.host.ownMuted(entry.info.source, d.muted);
      return;
    }
    const t = ui.getTile(ui.tileKey(d.participant_sid, groupOf(entry.info.source)));
    if (!t) return;
    if (entry.info.kind === 'video') t.videoMuted = d.muted;
    else t.audioMuted = d.muted;
    ui.refreshTile(t);
  }

  // onSetLayers: dynacast. Encode only the layers of our track that some
  // subscriber wants (none for an empty list).
  onSetLayers(d) {
    if (!d.track_sid) return;
    const sender = this.ownSender(d.track_sid);
    if (!sender) {
      this.layersWanted.set(d.track_sid, d.active || []); // before track_published
      return;
    }
    this.dynacast.apply(sender, d.active || []);
  }

  applyWantedLayers(trackSid) {
    const active = this.layersWanted.get(trackSid);
    if (!active) return;
    this.layersWanted.delete(trackSid);
    const sender = this.ownSender(trackSid);
    if (sender) this.dynacast.apply(sender, active);
  }

  // ownSender: the sender of our track that the server knows as trackSid.
  ownSender(trackSid) {
    for (const [sender, info] of this.senders) if (this.ownSids.get(info.cid) === trackSid) return sender;
    return null;
  }

  onSpeakers(d) {
    this.speakers = (d.speakers || []).filter((x) => x && x.sid);
    this.host.speakers(this, this.speakers);
  }

  // onUpdated: an administrator changed our name, metadata or grants.
  onUpdated(d) {
    if (d.participant) this.self = { ...this.self, ...d.participant };
    if (d.grants) this.grants = d.grants;
    this.host.updated(this);
  }

  // onLeave: the server ends the session. Being replaced or removed is
  // final; after a shutdown or a failed connection the page joins again.
  onLeave(d) {
    this.gone = true;
    if (d.reason === 'room_moved') this.moved = true;
    const final = d.reason === 'duplicate_identity' || d.reason === 'removed' || d.reason === 'room_closed';
    if (final) this.fatal = true;
    const text = LEAVE_REASONS[d.reason] || `The server ended the session (${d.reason || 'closed'}).`;
    ui.showMessage(final ? text : `${text} Joining again…`, final && d.reason !== 'duplicate_identity' ? 'error' : 'info');
  }

  onError(d) {
    console.warn('parley: server error', d.code, d.message);
    if (d.code === 'room_moved') {
      // The room's server stopped or drains: this session is over; a new
      // join places the room on a live server. The socket closes next.
      this.moved = true;
      this.gone = true;
      return;
    }
    if (CLUSTER_RETRY.has(d.code) && (!this.self || this.resuming)) {
      // The join or resume was refused for now (the socket closes next):
      // the page tries again after a backoff. A refused resume is not a
      // lost session: the session may still be waiting on its server.
      this.retryCode = d.code;
      return;
    }
    if (CLUSTER_RETRY.has(d.code)) {
      // In a session: a message could not be relayed to the room's server
      // and was lost; the session goes on.
      ui.showMessage(`${ERRORS[d.code]} A message to the server was lost.`, 'info');
      return;
    }
    // Any refusal of a resume (an older server says not_joined) means: join
    // afresh. The server closes the socket next.
    if (this.resuming || d.code === 'resume_failed') {
      this.resumeFailed = true;
      return;
    }
    // request names the message refused; older servers start the text
    // with it ("offer: …").
    const about = d.request || (d.message || '').split(':')[0];
    if (d.code === 'rate_limited') {
      // That message was ignored: an offer or answer is sent again.
      if (about === 'offer' && this.answer) setTimeout(() => this.answer && this.answer.send(), 1000);
      if (about === 'track_settings') setTimeout(() => this.live && this.viewer.resend(), 2000);
      if (about === 'answer') {
        this.owed.answer = true;
        setTimeout(() => {
          if (this.owed.answer && this.live && this.sub.signalingState === 'stable') {
            this.owed.answer = !this.send('answer', { sdp: this.sub.localDescription.sdp });
          }
        }, 1000);
      }
      return;
    }
    if (about === 'track_settings') {
      // A track that went away meanwhile, or an older server: the video
      // still plays, at whatever size the server chooses.
      if (d.code === 'unknown_type') this.viewer.stop();
      return;
    }
    const human = ERRORS[d.code] || 'The server reported an error.';
    ui.showMessage(`${human}${d.message ? ` (${d.code}: ${d.message})` : ` (${d.code})`}`);
    if (FATAL.has(d.code)) this.fatal = true;
    if (OFFER_REFUSED.has(d.code) && (about === 'offer' || !d.message) && this.answer) this.answer.reject(new Error(d.message || d.code));
  }

  // ---- ending ----

  closed(ev) {
    this.end();
    this.host.closed(this, ev);
  }

  // end closes the socket and the peer connections and forgets the remote
  // tiles; the host is not told.
  end() {
    if (this.ended) return;
    this.ended = true;
    this.signal.close(1000, 'ended');
    clearTimeout(this.connectTimer);
    clearInterval(this.keepalive);
    this.ice.stop();
    this.viewer.stop();
    if (this.speakers.length > 0) {
      this.speakers = [];
      this.host.speakers(this, []);
    }
    if (this.barrier) this.barrier.done();
    if (this.answer) this.answer.reject(new Error('session ended'));
    if (this.data) this.data.close();
    for (const pc of [this.pub, this.sub]) if (pc) pc.close();
    ui.removeTiles((t) => !t.local || t.source === 'screen');
  }

  leave() {
    this.send('leave', {});
    this.signal.close(1000, 'left');
    this.end();
  }
}
