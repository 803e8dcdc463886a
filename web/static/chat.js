// Chat (docs/protocol.md, "Chat"): the chat panel, its messages to the
// room and direct ones, the typing signal and the unread count. What the
// user sends goes to the outbox first and stays there until the server's
// chat_ack, so nothing is lost to a reconnect or a reload, and the server's
// de-duplication by id means nothing shows twice.

import { Outbox } from './outbox.js';
import { $ } from './ui.js';

const TYPING_EVERY_MS = 2000;

const REFUSED = {
  too_large: 'too long',
  permission_denied: 'you may not chat here',
  unknown_participant: 'the recipient is not in the room',
  bad_request: 'the server refused it',
};

function pendingText(online, sent) {
  if (!online) return 'waiting for the connection…';
  return sent ? 'sending…' : 'waiting to send again…'; // after a rate limit
}

function newID() {
  if (crypto.randomUUID) return crypto.randomUUID();
  // Pages served over plain http off localhost have no randomUUID.
  const b = crypto.getRandomValues(new Uint8Array(16));
  return [...b].map((x) => x.toString(16).padStart(2, '0')).join('');
}

// Chat sends through send(msg) -> bool, asks isOnline() whether the data
// channel is open and nameOf(identity) for display names.
export class Chat {
  constructor({ send, isOnline, nameOf }) {
    this.send = send;
    this.isOnline = isOnline;
    this.nameOf = nameOf;
    this.room = '';
    this.self = '';
    this.selfName = '';
    this.outbox = new Outbox('', '');
    this.msgs = new Map(); // id -> message
    this.nodes = new Map(); // id -> <li>
    this.seq = 0;
    this.inFlight = new Set(); // ids sent on the open channel, not yet acknowledged
    this.retryTimer = 0; // set only while limited
    this.retryDue = 0;
    // After a rate limit, the outbox goes out one message at a time, each
    // after the previous one's chat_ack, until it is empty: a slot that
    // frees between two messages must not let a later one in first.
    this.limited = false;
    this.maxBytes = 16384; // data.max_message_bytes, from the roster
    this.typingAt = 0; // when we last said typing: true (0: not typing)
    this.unread = 0;
    this.open = false; // the chat panel is shown
    this.peopleKey = ''; // the recipients the select offers
    $('chat-form').addEventListener('submit', (e) => {
      e.preventDefault();
      this.submit();
    });
    $('chat-input').addEventListener('input', () => this.typed());
  }

  // start shows a room's chat: what the outbox of this identity still holds
  // shows as pending.
  start(room, identity, name) {
    this.stop();
    this.room = room;
    this.selfName = name || '';
    this.setIdentity(identity);
  }

  // setIdentity names who we are once it is known (from the token, joined
  // or the roster); the outbox is per room and identity.
  setIdentity(identity, name) {
    if (name) this.selfName = name;
    if (!identity || identity === this.self) return;
    this.self = identity;
    this.outbox = new Outbox(this.room, identity);
    for (const e of this.outbox.entries()) this.addOwn(e);
    for (const m of this.msgs.values()) m.mine = m.from === identity;
    this.render();
  }

  stop() {
    clearTimeout(this.retryTimer);
    this.retryTimer = 0;
    this.limited = false;
    this.msgs.clear();
    this.nodes.clear();
    this.inFlight.clear();
    this.self = '';
    this.outbox = new Outbox('', '');
    this.typingAt = 0;
    this.unread = 0;
    $('chat-input').value = '';
    $('chat-to').value = '';
    this.render();
  }

  // ---- sending ----

  submit() {
    const input = $('chat-input');
    const text = input.value;
    if (!text.trim()) return;
    const entry = { id: newID(), text, to: $('chat-to').value || null, created: Date.now() };
    this.outbox.add(entry);
    this.addOwn(entry);
    // While earlier messages wait out a rate limit, this one waits behind
    // them: they go out in order.
    if (!this.limited) this.transmit(entry);
    input.value = '';
    this.stopTyping();
    this.render(true);
  }

  transmit(entry) {
    if (this.inFlight.has(entry.id)) return;
    const msg = { type: 'chat', id: entry.id, text: entry.text };
    if (entry.to) msg.to = entry.to;
    if (new TextEncoder().encode(JSON.stringify(msg)).length > this.maxBytes) {
      this.fail(entry.id, REFUSED.too_large); // the server would refuse it
      return;
    }
    if (this.send(msg)) this.inFlight.add(entry.id);
  }

  setLimits(limits) {
    if (limits && limits.max_message_bytes > 0) this.maxBytes = limits.max_message_bytes;
  }

  // flush sends every message of the outbox that is not on its way, in
  // order, with its id: after the channel (re)opens, and after a rate
  // limit has passed (then only the oldest: see limited). The server drops
  // what it has already seen.
  flush() {
    const waiting = this.outbox.entries();
    if (waiting.length === 0) this.limited = false;
    for (const e of waiting) {
      this.addOwn(e);
      if (this.limited && this.inFlight.size > 0) break;
      this.transmit(e);
    }
    this.render();
  }

  // online: the data channel is open (again) and the roster is in; what
  // was sent on an older channel is sent again.
  online() {
    this.inFlight.clear();
    this.flush();
  }

  retryIn(ms) {
    const due = Date.now() + Math.max(ms, 100);
    if (this.retryTimer && due <= this.retryDue) return;
    clearTimeout(this.retryTimer);
    this.retryDue = due;
    this.retryTimer = setTimeout(() => {
      this.retryTimer = 0;
      this.flush();
    }, due - Date.now());
  }

  // typed: say typing: true at most every 2 s while keys come, false when
  // the input is emptied. The server ends "typing" by itself otherwise.
  // While messages wait out a rate limit, nothing is said: the server
  // counts presence too, and the messages need the budget more.
  typed() {
    if (!$('chat-input').value) {
      this.stopTyping();
      return;
    }
    if (this.limited) return;
    const now = Date.now();
    if (now - this.typingAt >= TYPING_EVERY_MS && this.send({ type: 'presence', typing: true })) this.typingAt = now;
  }

  stopTyping() {
    if (!this.typingAt) return;
    if (this.limited) {
      this.typingAt = 0; // the server's typing timeout ends it
      return;
    }
    if (this.send({ type: 'presence', typing: false })) this.typingAt = 0;
  }

  // ---- receiving ----

  addOwn(e) {
    if (this.msgs.has(e.id)) return;
    this.msgs.set(e.id, {
      id: e.id, from: this.self, fromName: this.selfName, to: e.to || null, text: e.text, ts: e.created,
      pending: true, failed: false, reason: '', mine: true, seq: this.seq++, deliveries: 0,
    });
  }

  // merge adds or completes a message from the server; it says whether the
  // message is new.
  merge(m) {
    if (!m || typeof m.id !== 'string' || typeof m.text !== 'string') return false;
    const known = this.msgs.get(m.id);
    const mine = !!this.self && m.from === this.self;
    this.msgs.set(m.id, {
      id: m.id, from: m.from || '', fromName: m.from_name || '', to: m.to || null, text: m.text,
      ts: m.ts || Date.now(), pending: false, failed: false, reason: '', mine,
      seq: known ? known.seq : this.seq++, deliveries: known ? known.deliveries : 0,
    });
    return !known;
  }

  onHistory(list) {
    for (const m of list || []) this.merge(m);
    this.render();
  }

  // onChat shows a message as it is sent; deliveries counts how often the
  // server delivered one id live (it should be once).
  onChat(m) {
    const fresh = this.merge(m);
    const kept = this.msgs.get(m.id);
    if (kept) kept.deliveries++;
    if (fresh && m.from !== this.self && (!this.open || document.visibilityState === 'hidden')) this.unread++;
    this.render();
  }

  onAck(d) {
    this.outbox.remove(d.id);
    this.inFlight.delete(d.id);
    const m = this.msgs.get(d.id);
    if (m) {
      m.pending = false;
      m.failed = false;
      if (d.ts) m.ts = d.ts;
    }
    if (this.limited && !this.retryTimer) this.flush(); // the next one
    this.render();
  }

  // onError handles an error about a chat message and says whether it was
  // one. Rate limits are waited out; anything else is final.
  onError(d) {
    const m = d.id && this.msgs.get(d.id);
    if (d.request !== 'chat' && !m) return false;
    if (!d.id) {
      console.warn('parley: chat refused', d.code, d.message);
      return true;
    }
    if (d.code === 'rate_limited') {
      this.inFlight.delete(d.id);
      this.limited = true;
      const wait = Number(d.retry_after_ms) || 1000;
      console.info('parley: chat rate limited; sending again in', wait, 'ms');
      this.retryIn(wait);
      this.render();
    } else {
      this.fail(d.id, REFUSED[d.code] || d.message || d.code);
    }
    return true;
  }

  // fail gives up on one of our messages: it leaves the outbox and shows
  // why it was not sent.
  fail(id, reason) {
    this.outbox.remove(id);
    this.inFlight.delete(id);
    const m = this.msgs.get(id);
    if (m) {
      m.pending = false;
      m.failed = true;
      m.reason = reason;
    }
    if (this.limited && !this.retryTimer) queueMicrotask(() => this.flush()); // the next one
    this.render();
  }

  // ---- the panel ----

  setOpen(open) {
    this.open = open;
    this.seen();
    if (open) this.scrollDown();
  }

  // seen clears the unread count when the panel is open and the page shown.
  seen() {
    if (this.open && document.visibilityState !== 'hidden' && this.unread) {
      this.unread = 0;
      this.renderBadge();
    }
  }

  // setPeople fills the recipient select: everyone, or one participant. A
  // chosen recipient who left stays chosen (marked), so that a direct
  // message never goes to the room by surprise.
  setPeople(entries, self) {
    const sel = $('chat-to');
    const chosen = sel.value;
    const others = entries.filter((p) => p.identity !== self)
      .map((p) => [p.identity, p.name || p.identity])
      .sort((a, b) => a[1].localeCompare(b[1]));
    if (chosen && !others.some(([id]) => id === chosen)) {
      const known = [...sel.options].find((o) => o.value === chosen);
      const label = known ? known.textContent.replace(/ \(left\)$/, '') : chosen;
      others.push([chosen, `${label} (left)`]);
    }
    // Presence changes often (typing); an open select is left alone
    // unless its choices change.
    const key = JSON.stringify(others);
    if (key === this.peopleKey) return;
    this.peopleKey = key;
    sel.replaceChildren(new Option('Everyone', ''), ...others.map(([id, name]) => new Option(name, id)));
    sel.value = chosen;
  }

  // list is the chat in display order: delivered messages by server time,
  // then what still waits, in the order it was written.
  list() {
    const waiting = (m) => (m.pending ? 1 : 0);
    return [...this.msgs.values()].sort((a, b) => waiting(a) - waiting(b) || a.ts - b.ts || a.seq - b.seq);
  }

  render(stick = false) {
    const el = $('chat-list');
    const atEnd = stick || el.scrollHeight - el.scrollTop - el.clientHeight < 40;
    const online = this.isOnline();
    const items = this.list().map((m) => this.node(m, online));
    for (const id of this.nodes.keys()) if (!this.msgs.has(id)) this.nodes.delete(id);
    el.replaceChildren(...items);
    if (atEnd) this.scrollDown();
    this.renderBadge();
  }

  node(m, online) {
    let li = this.nodes.get(m.id);
    if (!li) {
      li = document.createElement('li');
      li.className = 'chat-msg';
      li.dataset.id = m.id;
      const meta = document.createElement('div');
      meta.className = 'chat-meta';
      for (const cls of ['chat-from', 'chat-dm', 'chat-time', 'chat-status']) {
        const s = document.createElement(cls === 'chat-time' ? 'time' : 'span');
        s.className = cls;
        meta.append(s);
      }
      const text = document.createElement('div');
      text.className = 'chat-text';
      li.append(meta, text);
      this.nodes.set(m.id, li);
    }
    const [from, dm, time, status] = li.firstChild.children;
    li.dataset.from = m.from;
    li.classList.toggle('mine', m.mine);
    li.classList.toggle('direct', !!m.to);
    li.classList.toggle('pending', m.pending);
    li.classList.toggle('failed', m.failed);
    from.textContent = (m.fromName || this.nameOf(m.from) || m.from || '?') + (m.mine ? ' (you)' : '');
    dm.textContent = !m.to ? '' : m.mine ? `direct to ${this.nameOf(m.to) || m.to}` : 'direct';
    const when = new Date(m.ts);
    time.dateTime = when.toISOString();
    time.textContent = when.toLocaleTimeString([], { hour: '2-digit', minute: '2-digit' });
    status.textContent = m.failed ? `not sent: ${m.reason}` : m.pending ? pendingText(online, this.inFlight.has(m.id)) : '';
    li.lastChild.textContent = m.text;
    return li;
  }

  scrollDown() {
    const el = $('chat-list');
    el.scrollTop = el.scrollHeight;
  }

  renderBadge() {
    const badge = $('chat-unread');
    badge.textContent = this.unread ? String(this.unread) : '';
    badge.hidden = !this.unread;
    $('btn-chat').setAttribute('aria-label', this.unread ? `Chat, ${this.unread} unread` : 'Chat');
  }

  // snapshot is what tests see of the chat.
  snapshot() {
    return this.list().map((m) => ({
      id: m.id, from: m.from, from_name: m.fromName, to: m.to, text: m.text, ts: m.ts,
      pending: m.pending, failed: m.failed, reason: m.reason, mine: m.mine, direct: !!m.to, deliveries: m.deliveries,
    }));
  }
}
