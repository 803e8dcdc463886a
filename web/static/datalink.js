// The two data channels of docs/protocol.md ("Data channels"), which the
// server opens on the subscriber connection: "parley" (reliable, ordered)
// and "parley-lossy" (unordered, no retransmissions). Each message is one
// JSON text message {"type": ...}, without a data wrapper. The link keeps
// the participant online with a heartbeat at the interval the roster names.

export const RELIABLE = 'parley';
export const LOSSY = 'parley-lossy';

const DEFAULT_HEARTBEAT_MS = 5000;

// DataLink tells its host what happens on the reliable channel:
//   onOpen()           "parley" opened
//   onMessage(msg)     a message arrived on either channel
//   onClose()          "parley" closed (once)
export class DataLink {
  constructor({ onOpen, onMessage, onClose }) {
    this.handlers = { onOpen, onMessage, onClose };
    this.channels = new Map(); // label -> RTCDataChannel
    this.heartbeatMs = DEFAULT_HEARTBEAT_MS;
    this.timer = 0;
    this.closed = false;
  }

  // attach takes a channel from RTCPeerConnection.ondatachannel.
  attach(channel) {
    if (this.closed || (channel.label !== RELIABLE && channel.label !== LOSSY)) return;
    this.channels.set(channel.label, channel);
    channel.addEventListener('message', (ev) => this.receive(ev.data));
    if (channel.label !== RELIABLE) return;
    const opened = () => {
      this.beat();
      this.handlers.onOpen();
    };
    if (channel.readyState === 'open') opened();
    else channel.addEventListener('open', opened);
    channel.addEventListener('close', () => this.close());
  }

  get open() {
    const ch = this.channels.get(RELIABLE);
    return !this.closed && !!ch && ch.readyState === 'open';
  }

  // send sends msg on "parley" (or, lossy, on "parley-lossy") and says
  // whether it went out.
  send(msg, { lossy = false } = {}) {
    const ch = this.channels.get(lossy ? LOSSY : RELIABLE);
    if (this.closed || !ch || ch.readyState !== 'open') return false;
    try {
      ch.send(JSON.stringify(msg));
      return true;
    } catch (e) {
      console.warn('parley: data channel send', e);
      return false;
    }
  }

  receive(data) {
    if (this.closed || typeof data !== 'string') return;
    let msg;
    try {
      msg = JSON.parse(data);
    } catch {
      console.warn('parley: data message is not JSON', data);
      return;
    }
    if (!msg || typeof msg.type !== 'string') return;
    const every = msg.type === 'roster' && msg.limits && msg.limits.heartbeat_interval_ms;
    if (every > 0 && every !== this.heartbeatMs) {
      this.heartbeatMs = every;
      this.beat();
    }
    try {
      this.handlers.onMessage(msg);
    } catch (e) {
      console.error('parley: handling data', msg.type, e);
    }
  }

  // beat (re)starts the heartbeat.
  beat() {
    clearInterval(this.timer);
    this.timer = setInterval(() => this.send({ type: 'heartbeat' }), this.heartbeatMs);
  }

  close() {
    if (this.closed) return;
    this.closed = true;
    clearInterval(this.timer);
    for (const ch of this.channels.values()) {
      try {
        ch.close();
      } catch { /* already closed */ }
    }
    this.handlers.onClose();
  }
}
