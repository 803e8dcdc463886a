// The signaling socket of docs/protocol.md: one JSON text frame per message,
// {"type": "...", "data": {...}}. Messages are handled one at a time, in the
// order they arrive, so a handler that awaits (setRemoteDescription) never
// sees the next message before it is done.

export const PROTOCOL = 1;

export function signalURL() {
  const scheme = location.protocol === 'https:' ? 'wss' : 'ws';
  return `${scheme}://${location.host}/rtc`;
}

export class Signal {
  // onMessage(type, data) may be async; onClose({code, reason}) is called
  // once, when the socket closes for any reason.
  constructor(url, { onOpen, onMessage, onClose }) {
    this.ws = new WebSocket(url);
    this.closed = false;
    this.queue = Promise.resolve();
    this.ws.onopen = () => onOpen && onOpen();
    this.ws.onmessage = (ev) => {
      let msg;
      try {
        msg = JSON.parse(ev.data);
      } catch {
        console.warn('parley: message is not JSON', ev.data);
        return;
      }
      if (!msg || typeof msg.type !== 'string') return;
      this.queue = this.queue
        .then(() => (this.closed ? undefined : onMessage(msg.type, msg.data || {})))
        .catch((e) => console.error('parley: handling', msg.type, e));
    };
    this.ws.onclose = (ev) => {
      if (this.closed) return;
      this.closed = true;
      onClose({ code: ev.code, reason: ev.reason });
    };
  }

  get open() {
    return !this.closed && this.ws.readyState === WebSocket.OPEN;
  }

  send(type, data = {}) {
    if (this.open) this.ws.send(JSON.stringify({ type, data }));
  }

  // close ends the socket without calling onClose.
  close(code = 1000, reason = '') {
    this.closed = true;
    try {
      this.ws.close(code, reason);
    } catch {
      this.ws.close();
    }
  }
}
