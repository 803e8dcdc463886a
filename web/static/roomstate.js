// The server's rooms as the admin event stream describes them
// (docs/api.md, "Events"): a snapshot, then one event at a time. Nothing
// here touches the page or the network.

const SOURCE_ORDER = ['camera', 'microphone', 'screen', 'screen_audio'];

export class RoomState {
  constructor() {
    this.rooms = new Map(); // name -> {name, created_at, max_participants, participants: Map sid -> participant}
  }

  // replace takes a snapshot's rooms (each as GET /api/rooms/{room}).
  replace(rooms) {
    this.rooms.clear();
    for (const r of rooms || []) {
      if (!r || typeof r.name !== 'string') continue;
      const room = this.ensureRoom(r.name, r.created_at);
      room.max_participants = r.max_participants;
      for (const p of r.participants || []) {
        const part = this.join(room, p, p.joined_at);
        for (const t of p.tracks || []) setTrack(part, t);
      }
    }
  }

  // apply takes one event; it returns whether anything changed.
  apply(ev) {
    if (!ev || typeof ev.room !== 'string') return false;
    const name = ev.room;
    switch (ev.type) {
      case 'room_started':
        if (this.rooms.has(name)) return false;
        this.ensureRoom(name, ev.time);
        return true;
      case 'room_finished':
        return this.rooms.delete(name);
      case 'participant_joined':
        if (!ev.participant) return false;
        this.join(this.ensureRoom(name, ev.time), ev.participant, ev.time);
        return true;
      case 'participant_left': {
        const room = this.rooms.get(name);
        const p = room && findParticipant(room, ev.participant);
        if (!p) return false;
        // A participant_left of an older session must not remove the
        // newer one that replaced it (duplicate_identity).
        if (ev.participant.sid && p.sid !== ev.participant.sid) return false;
        room.participants.delete(p.sid);
        return true;
      }
      case 'track_published': {
        if (!ev.participant || !ev.track) return false;
        const room = this.ensureRoom(name, ev.time);
        const p = findParticipant(room, ev.participant) || this.join(room, ev.participant, ev.time);
        setTrack(p, ev.track);
        return true;
      }
      case 'track_unpublished': {
        const hit = this.findTrack(name, ev.participant, ev.track);
        if (!hit) return false;
        hit.participant.tracks.delete(hit.track.sid);
        return true;
      }
      case 'track_muted': {
        const hit = this.findTrack(name, ev.participant, ev.track);
        if (!hit || typeof ev.track.muted !== 'boolean' || hit.track.muted === ev.track.muted) return false;
        hit.track.muted = ev.track.muted;
        return true;
      }
      default:
        return false;
    }
  }

  ensureRoom(name, createdAt) {
    let room = this.rooms.get(name);
    if (!room) {
      room = { name, created_at: Number(createdAt) || 0, max_participants: undefined, participants: new Map() };
      this.rooms.set(name, room);
    }
    return room;
  }

  // join adds (or refreshes) a participant; identities are unique in a
  // room, so an older session of the same identity goes.
  join(room, info, joinedAt) {
    for (const other of room.participants.values()) {
      if (other.identity === info.identity && other.sid !== info.sid) room.participants.delete(other.sid);
    }
    let p = room.participants.get(info.sid);
    if (!p) {
      p = { sid: String(info.sid || ''), identity: String(info.identity || ''), tracks: new Map() };
      room.participants.set(p.sid, p);
    }
    p.name = String(info.name || '');
    p.joined_at = Number(info.joined_at || joinedAt) || p.joined_at || 0;
    return p;
  }

  findTrack(roomName, participant, track) {
    const room = this.rooms.get(roomName);
    if (!room || !track || !track.sid) return null;
    const first = findParticipant(room, participant);
    for (const p of first ? [first, ...room.participants.values()] : room.participants.values()) {
      const t = p.tracks.get(track.sid);
      if (t) return { participant: p, track: t };
    }
    return null;
  }

  // list is the state as plain objects, sorted: rooms by name, people by
  // joining time, tracks by source.
  list() {
    return [...this.rooms.values()]
      .sort((a, b) => (a.name < b.name ? -1 : a.name > b.name ? 1 : 0))
      .map((r) => ({
        name: r.name,
        created_at: r.created_at,
        max_participants: r.max_participants,
        participants: [...r.participants.values()]
          .sort((a, b) => a.joined_at - b.joined_at || (a.identity < b.identity ? -1 : 1))
          .map((p) => ({
            sid: p.sid,
            identity: p.identity,
            name: p.name,
            joined_at: p.joined_at,
            tracks: [...p.tracks.values()].sort(byTrack).map((t) => ({ ...t })),
          })),
      }));
  }
}

function findParticipant(room, info) {
  if (!info) return null;
  if (info.sid && room.participants.has(info.sid)) return room.participants.get(info.sid);
  if (!info.identity) return null;
  for (const p of room.participants.values()) if (p.identity === info.identity) return p;
  return null;
}

function setTrack(p, t) {
  if (!t || !t.sid) return;
  const old = p.tracks.get(t.sid) || {};
  p.tracks.set(t.sid, {
    sid: String(t.sid),
    kind: String(t.kind || old.kind || ''),
    source: String(t.source || old.source || ''),
    muted: typeof t.muted === 'boolean' ? t.muted : !!old.muted,
    codec: String(t.codec || old.codec || ''),
  });
}

function byTrack(a, b) {
  const rank = (t) => {
    const i = SOURCE_ORDER.indexOf(t.source);
    return i < 0 ? SOURCE_ORDER.length : i;
  };
  return rank(a) - rank(b) || (a.sid < b.sid ? -1 : a.sid > b.sid ? 1 : 0);
}
