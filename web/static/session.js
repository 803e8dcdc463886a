// One signaling session (docs/protocol.md): the WebSocket and its two peer
// connections. The publisher connection carries our tracks and we offer on
// it; the subscriber connection carries everyone else's and the server
// offers on it, so negotiation never glares. A reconnect makes a new
// Session; the local media belongs to the page and survives it.

import { DataLink } from './datalink.js';
import { PROTOCOL, Signal, signalURL } from './signal.js';
import * as ui from './ui.js';

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
  internal: 'The server had a problem.',
};
// Errors after which joining again with the same token cannot work.
const FATAL = new Set(['unsupported_protocol', 'not_joined', 'invalid_token', 'token_expired', 'room_mismatch',
  'room_full', 'too_many_rooms']);
// Errors that refuse our last publisher offer: no answer will come.
const OFFER_REFUSED = new Set(['bad_request', 'bad_sdp', 'permission_denied', 'too_many_tracks']);

const LEAVE_REASONS = {
  server_shutdown: 'The server is shutting down.',
  duplicate_identity: 'You joined this room from another tab or device.',
  removed: 'You were removed from the room.',
  room_closed: 'The room was closed.',
};

const ANSWER_TIMEOUT_MS = 15000;

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
//   host.joined(session)       the server accepted us; the connections exist
//   host.changed()             a connection changed state
//   host.updated(session)      an administrator changed our grants or name
//   host.ownMuted(source, muted) the server says one of our tracks is (un)muted
//   host.closed(session, ev)   the socket closed ({code, reason})
//   host.dataOpen(session)     the "parley" data channel opened
//   host.data(session, msg)    a message arrived on a data channel
//   host.dataClosed(session)   the data channels closed
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
    this.pending = { publisher: [], subscriber: [] }; // candidates before their description
    this.pubBusy = false;
    this.pubAgain = false;
    this.answer = null; // {resolve, reject} while an offer waits
    this.ended = false;
    this.fatal = false;
    this.signal = new Signal(signalURL(), {
      onOpen: () => this.signal.send('join', { token: this.token, protocol: PROTOCOL, room: this.room }),
      onMessage: (type, data) => this.handle(type, data),
      onClose: (ev) => this.closed(ev),
    });
  }

  send(type, data) {
    this.signal.send(type, data);
  }

  async handle(type, d) {
    switch (type) {
      case 'joined': return this.onJoined(d);
      case 'answer': return this.onAnswer(d);
      case 'offer': return this.onOffer(d);
      case 'candidate': return this.onCandidate(d);
      case 'participant_joined': return this.addParticipant(d.participant);
      case 'participant_left': return this.removeParticipant(d.sid);
      case 'track_published': return this.onTrackPublished(d.participant_sid, d.track);
      case 'track_unpublished': return this.onTrackUnpublished(d);
      case 'track_muted': return this.onTrackMuted(d);
      case 'participant_updated': return this.onUpdated(d);
      case 'ping': return this.send('pong', { ts: d.ts });
      case 'pong': return undefined;
      case 'leave': return this.onLeave(d);
      case 'error': return this.onError(d);
      default: console.warn('parley: unknown message', type, d);
    }
    return undefined;
  }

  // ---- joining ----

  onJoined(d) {
    this.self = d.participant;
    this.grants = d.grants || {};
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
    this.host.joined(this, d);
  }

  newPeer(target, iceServers) {
    const config = { iceServers, bundlePolicy: 'max-bundle' };
    // ?relay=1 forces media through TURN: a way to check a deployment's relay.
    if (new URLSearchParams(location.search).get('relay') === '1') config.iceTransportPolicy = 'relay';
    const pc = new RTCPeerConnection(config);
    pc.addEventListener('icecandidate', (e) => {
      this.send('candidate', { target, candidate: e.candidate ? e.candidate.toJSON() : null });
    });
    pc.addEventListener('connectionstatechange', () => this.host.changed());
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

  // ---- publishing ----

  addSender(track, stream, source) {
    const tr = this.pub.addTransceiver(track, { direction: 'sendonly', streams: [stream] });
    this.senders.set(tr.sender, { source, cid: track.id });
    return tr;
  }

  senderFor(source) {
    for (const [sender, info] of this.senders) if (info.source === source) return { sender, info };
    return null;
  }

  // negotiate sends an offer on the publisher connection, one at a time:
  // a change made while an offer is out is sent once its answer is in.
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
        const offer = await this.pub.createOffer();
        await this.pub.setLocalDescription(offer);
        const tracks = this.describeTracks(msidTracks(this.pub.localDescription.sdp));
        const answered = new Promise((resolve, reject) => {
          this.answer = { resolve, reject };
          setTimeout(() => reject(new Error('the server did not answer the offer')), ANSWER_TIMEOUT_MS);
        });
        this.send('offer', { sdp: this.pub.localDescription.sdp, tracks });
        const sdp = await answered;
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

  // describeTracks lists what the offer sends: every live sendonly
  // transceiver, by the track id of its a=msid line.
  describeTracks(msids) {
    const out = [];
    for (const t of this.pub.getTransceivers()) {
      const info = this.senders.get(t.sender);
      if (!info || t.stopped || t.direction !== 'sendonly' || !t.sender.track) continue;
      if (t.mid && msids[t.mid]) info.cid = msids[t.mid];
      out.push({ track_id: info.cid, source: info.source, muted: !t.sender.track.enabled });
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
      this.send('answer', { sdp: this.sub.localDescription.sdp });
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
  }

  // ---- room events ----

  onTrackPublished(psid, track) {
    this.tracks.set(track.sid, { psid, info: track });
    if (this.self && psid === this.self.sid) {
      this.ownSids.set(track.cid, track.sid);
      // A mute toggled before the server knew the track.
      const s = [...this.senders.values()].find((i) => i.cid === track.cid);
      const local = s && this.senderFor(s.source)?.sender.track;
      if (local && local.enabled === track.muted) this.send('mute', { track_sid: track.sid, muted: !local.enabled });
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
    ui.removeTileTrack(t, entry.info.kind);
    const left = [...this.tracks.values()].some((x) => x.psid === d.participant_sid && groupOf(x.info.source) === group);
    if (group === 'screen' && !left) ui.removeTile(t.key);
  }

  onTrackMuted(d) {
    const entry = this.tracks.get(d.track_sid);
    if (!entry) return;
    entry.info.muted = d.muted;
    if (this.self && d.participant_sid === this.self.sid) {
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

  // onUpdated: an administrator changed our name, metadata or grants.
  onUpdated(d) {
    if (d.participant) this.self = { ...this.self, ...d.participant };
    if (d.grants) this.grants = d.grants;
    this.host.updated(this);
  }

  // onLeave: the server ends the session. Being replaced or removed is
  // final; after a shutdown or a failed connection the page joins again.
  onLeave(d) {
    const final = d.reason === 'duplicate_identity' || d.reason === 'removed' || d.reason === 'room_closed';
    if (final) this.fatal = true;
    const text = LEAVE_REASONS[d.reason] || `The server ended the session (${d.reason || 'closed'}).`;
    ui.showMessage(final ? text : `${text} Joining again…`, final && d.reason !== 'duplicate_identity' ? 'error' : 'info');
  }

  onError(d) {
    const human = ERRORS[d.code] || 'The server reported an error.';
    console.warn('parley: server error', d.code, d.message);
    ui.showMessage(`${human}${d.message ? ` (${d.code}: ${d.message})` : ` (${d.code})`}`);
    if (FATAL.has(d.code)) this.fatal = true;
    // The protocol does not say which message an error answers; the server
    // starts the text with the message type ("offer: …").
    const aboutOffer = !d.message || d.message.startsWith('offer');
    if (OFFER_REFUSED.has(d.code) && aboutOffer && this.answer) this.answer.reject(new Error(d.message || d.code));
  }

  // ---- ending ----

  closed(ev) {
    this.end();
    this.host.closed(this, ev);
  }

  // end closes the peer connections and forgets the remote tiles.
  end() {
    if (this.ended) return;
    this.ended = true;
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
