// The chat outbox: messages this participant has sent and the server has
// not acknowledged yet, kept in localStorage so that they survive a
// reconnect and a reload of the page. The stored list is the truth: every
// operation reads it again, so that what another part of the page (or a
// test) wrote is never overwritten.
//
// An entry is {id, text, to, created}: the client-chosen message id, the
// text, the recipient identity for a direct message (or null) and the
// client time it was written, in unix milliseconds.

const MAX_AGE_MS = 24 * 60 * 60 * 1000;

export const outboxKey = (room, identity) => `parley.outbox.${room}.${identity}`;

export class Outbox {
  constructor(room, identity) {
    this.key = identity ? outboxKey(room, identity) : '';
    this.memory = []; // the last list written, used when localStorage fails
    this.stored = true; // the last write reached localStorage
  }

  // entries lists what waits, oldest first, without the entries older than
  // a day (which it forgets).
  entries() {
    const all = this.read();
    const fresh = all.filter((e) => Date.now() - e.created < MAX_AGE_MS);
    if (fresh.length !== all.length) this.write(fresh);
    return fresh;
  }

  add(entry) {
    const all = this.read().filter((e) => e.id !== entry.id);
    all.push(entry);
    this.write(all);
  }

  remove(id) {
    const all = this.read();
    const left = all.filter((e) => e.id !== id);
    if (left.length !== all.length) this.write(left);
  }

  has(id) {
    return this.read().some((e) => e.id === id);
  }

  read() {
    let list = this.memory;
    if (this.key) {
      try {
        const raw = localStorage.getItem(this.key);
        if (raw !== null) list = JSON.parse(raw);
        else if (this.stored) list = [];
      } catch { /* storage off or damaged: use the memory copy */ }
    }
    if (!Array.isArray(list)) return [];
    return list.filter((e) => e && typeof e.id === 'string' && typeof e.text === 'string')
      .map((e) => ({ id: e.id, text: e.text, to: e.to || null, created: Number(e.created) || Date.now() }));
  }

  write(list) {
    this.memory = list;
    if (!this.key) return;
    try {
      if (list.length === 0) localStorage.removeItem(this.key);
      else localStorage.setItem(this.key, JSON.stringify(list));
      this.stored = true;
    } catch {
      this.stored = false; // storage off or full: the memory copy still works
    }
  }
}
