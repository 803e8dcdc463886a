// The signaling socket of docs/protocol.md: one JSON text frame per message,
// {"type": "...", "data": {...}}. Messages are handled one at a time, in the
// order they arrive, so a handler that awaits (setRemoteDescription) never
// sees the next message before it is done. A Signal outlives its sockets:
// connect() opens a new one (to resume the session) and the messages of the
// new socket queue behind those of the old one.

export const PROTOCOL = 1;

export function signalURL() {
  const scheme = location.protocol === 'https:' ? 'wss' : 'ws';
  return `${scheme}://${location.host}/rtc`;
}

export class Signal {
  // onOpen() is called when a socket opens, onMessage(type, data) (which may
  // be async) for each message, and onClose({code, reason}) once for each
  // socket that closes by itself: not after close(), connect() or abort().
  constructor(url, { onOpen, onMessage, onClose }) {
    this.url = url;
    this.handlers = { onOpen, onMessage, onClose };
    this.ws = null;
    this.stopped = false; // close() was called: no more sockets, no more messages
    this.ready = false; // the session took this socket (joined or resumed)
    this.heardAt = 0; // when the current socket last brought something
    this.queue = Promise.resolve();
    this.connect();
  }

  // connect opens a new socket, dropping the current one if any.
  connect() {
    this.detach(4000, 'reconnecting');
    if (this.stopped) return;
    const ws = new WebSocket(this.url);
    this.ws = ws;
    this.heardAt = Date.now();
    ws.onopen = () => {
      if (ws !== this.ws) return;
      this.heardAt = Date.now();
      this.handlers.onOpen();
    };
    ws.onmessage = (ev) => {
      if (ws !== this.ws) return;
      this.heardAt = Date.now();
      let msg;
      try {
        msg = JSON.parse(ev.data);
      } catch {
        console.warn('parley: message is not JSON', ev.data);
        return;
      }
      if (!msg || typeof msg.type !== 'string') return;
      this.queue = this.queue
        .then(() => (this.stopped ? undefined : this.handlers.onMessage(msg.type, msg.data || {})))
        .catch((e) => console.error('parley: handling', msg.type, e));
    };
    ws.onclose = (ev) => {
      if (ws !== this.ws) return;
      this.ws = null;
      this.ready = false;
      this.handlers.onClose({ code: ev.code, reason: ev.reason });
    };
  }

  // open: a socket is open (joined or not).
  get open() {
    return !!this.ws && this.ws.readyState === WebSocket.OPEN;
  }

  // send sends one message on a socket the session has taken, and says
  // whether it went out; while the socket is down (or not yet joined or
  // resumed) the message is dropped.
  send(type, data = {}) {
    return this.ready && this.sendNow(type, data);
  }

  // sendNow sends on any open socket: join, resume and pong.
  sendNow(type, data = {}) {
    if (this.stopped || !this.open) return false;
    try {
      this.ws.send(JSON.stringify({ type, data }));
      return true;
    } catch (e) {
      console.warn('parley: send', type, e);
      return false;
    }
  }

  // abort gives up on the current socket (it hangs, or does not answer)
  // as if it had closed by itself.
  abort(reason) {
    if (!this.ws || this.stopped) return;
    this.detach(4000, reason);
    this.handlers.onClose({ code: 4000, reason });
  }

  // detach closes the current socket without calling onClose.
  detach(code, reason) {
    const ws = this.ws;
    if (!ws) return;
    this.ws = null;
    this.ready = false;
    ws.onopen = ws.onmessage = ws.onclose = null;
    try {
      ws.close(code, reason);
    } catch {
      ws.close();
    }
  }

  // close ends the socket for good without calling onClose.
  close(code = 1000, reason = '') {
    this.stopped = true;
    this.detach(code, reason);
  }
}
