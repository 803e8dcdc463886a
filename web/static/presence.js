// Presence (docs/protocol.md, "Presence"): the roster of the room as the
// server keeps it, drawn in the People panel, the "is typing" line of the
// chat, and this participant's own raised hand and away state.

import { $ } from './ui.js';

// Presence sends through send(msg) -> bool (false when the data channel is
// closed) and calls changed(presence) after the roster changes.
export class Presence {
  constructor({ send, changed }) {
    this.send = send;
    this.changed = changed;
    this.people = new Map(); // identity -> presence entry
    this.self = '';
    this.hand = null; // our raised hand; null until the first roster says
    this.speaking = new Map(); // identity -> rank (1: the loudest), from speakers
    $('btn-hand').addEventListener('click', () => this.toggleHand());
    this.render();
  }

  // start begins a new stay in a room; the hand is taken from the server.
  start(identity) {
    this.people.clear();
    this.speaking.clear();
    this.self = identity || '';
    this.hand = null;
    this.render();
  }

  stop() {
    this.start('');
  }

  entries() {
    return [...this.people.values()];
  }

  nameOf(identity) {
    const p = this.people.get(identity);
    return p ? p.name || p.identity : '';
  }

  // setRoster replaces the roster (each time the data channel opens) and
  // tells the server again what it may have lost of our own state.
  setRoster(self, participants) {
    if (self) this.self = self;
    this.people.clear();
    for (const p of participants || []) if (p && p.identity) this.people.set(p.identity, p);
    const mine = this.people.get(this.self);
    if (this.hand === null) this.hand = !!(mine && mine.hand); // a reload keeps what the server has
    this.resync();
    this.render();
  }

  // resync tells the server again what it may have lost of our own state
  // (our hand, whether the page is hidden): after a new roster, and after
  // a resumed session, whose changes made offline were not sent.
  resync() {
    const mine = this.people.get(this.self);
    const fix = {};
    if (this.hand !== null && mine && !!mine.hand !== this.hand) fix.hand = this.hand;
    const hidden = document.visibilityState === 'hidden';
    if (hidden || (mine && mine.status === 'away')) fix.away = hidden;
    if (Object.keys(fix).length > 0) this.send({ type: 'presence', ...fix });
  }

  update(entry) {
    if (!entry || !entry.identity) return;
    this.people.set(entry.identity, entry);
    this.render();
  }

  // remove drops an entry, unless the identity is back with a new session.
  remove(identity, sid) {
    const p = this.people.get(identity);
    if (!p || (sid && p.sid && p.sid !== sid)) return;
    this.people.delete(identity);
    this.render();
  }

  // setSpeakers marks who speaks now (identities, loudest first); they
  // are listed after ourselves and raised hands, loudest first.
  setSpeakers(identities) {
    const next = new Map(identities.map((id, i) => [id, i + 1]));
    const same = next.size === this.speaking.size && [...next].every(([id, r]) => this.speaking.get(id) === r);
    if (same) return;
    this.speaking = next;
    this.render();
  }

  toggleHand() {
    this.hand = !this.hand;
    this.send({ type: 'presence', hand: this.hand }); // or with the next roster
    this.render();
  }

  setAway(away) {
    this.send({ type: 'presence', away });
  }

  // ---- drawing ----

  render() {
    const hand = $('btn-hand');
    hand.setAttribute('aria-pressed', String(!!this.hand));
    hand.textContent = this.hand ? 'Lower hand' : 'Raise hand';
    const list = this.sorted();
    $('people').replaceChildren(...list.map((p) => this.person(p)));
    $('people-count').textContent = list.length ? String(list.length) : '';
    this.renderTyping();
    if (this.changed) this.changed(this);
  }

  // sorted: ourselves first, then raised hands, then who speaks (loudest
  // first), then in order of arrival.
  sorted() {
    const rank = (p) => (p.identity === this.self ? 0 : p.hand ? 1 : this.speaking.has(p.identity) ? 2 : 3);
    const loud = (p) => this.speaking.get(p.identity) || 0;
    return this.entries().sort((a, b) => rank(a) - rank(b) || loud(a) - loud(b) || (a.joined_at || 0) - (b.joined_at || 0));
  }

  person(p) {
    const li = document.createElement('li');
    li.className = 'person';
    const status = p.status || 'online';
    Object.assign(li.dataset, {
      identity: p.identity, status, camera: p.camera ? 'on' : 'off', mic: p.mic ? 'on' : 'off',
      hand: String(!!p.hand), typing: String(!!p.typing),
    });
    if (p.identity === this.self) li.classList.add('self');
    const speaking = this.speaking.get(p.identity);
    if (speaking) {
      li.classList.add('speaking');
      if (speaking === 1) li.classList.add('loudest');
    }
    const dot = document.createElement('span');
    dot.className = 'dot';
    dot.title = status;
    const name = document.createElement('span');
    name.className = 'person-name';
    name.textContent = (p.name || p.identity) + (p.identity === this.self ? ' (you)' : '');
    const flags = document.createElement('span');
    flags.className = 'person-flags';
    if (status !== 'online') flags.append(pflag(status, 'status'));
    if (p.hand) flags.append(pflag('hand raised', 'hand'));
    if (p.typing && p.identity !== this.self) flags.append(pflag('typing…', 'typing'));
    if (p.screen) flags.append(pflag('screen', 'screen'));
    flags.append(pflag(p.camera ? 'camera on' : 'camera off', 'camera', !p.camera));
    flags.append(pflag(p.mic ? 'mic on' : 'mic off', 'mic', !p.mic));
    li.append(dot, name, flags);
    return li;
  }

  renderTyping() {
    const names = this.entries()
      .filter((p) => p.typing && p.identity !== this.self && p.status !== 'offline')
      .map((p) => p.name || p.identity);
    let text = '';
    if (names.length === 1) text = `${names[0]} is typing…`;
    else if (names.length === 2) text = `${names[0]} and ${names[1]} are typing…`;
    else if (names.length > 2) text = `${names[0]}, ${names[1]} and ${names.length - 2} more are typing…`;
    $('chat-typing').textContent = text;
  }
}

function pflag(text, kind, off = false) {
  const s = document.createElement('span');
  s.className = `pflag pflag-${kind}` + (off ? ' off' : '');
  s.textContent = text;
  return s;
}
