// ICE restarts (docs/protocol.md, "ICE restart: ice_restart"): a peer
// connection that failed, or stayed disconnected for a while, has its ICE
// restarted while signaling is up; a restart that did not help is tried
// again, at most every RESTART_EVERY_MS. How to restart is the session's
// business: an offer with iceRestart on the publisher connection, an
// ice_restart request for the subscriber one.

const DISCONNECTED_MS = 5000;
const RESTART_EVERY_MS = 10000;
const TARGETS = ['publisher', 'subscriber'];

// inUse: the connection has something to carry (we publish on it, or the
// server has offered on it).
export const inUse = (pc) => !!pc && (pc.getTransceivers().length > 0 || !!pc.remoteDescription || !!pc.localDescription);

// IceWatch asks peer(target) for a connection, canSignal() whether a
// restart can be asked for now, and restart(target) to do one.
export class IceWatch {
  constructor({ peer, canSignal, restart }) {
    this.peer = peer;
    this.canSignal = canSignal;
    this.restartPeer = restart;
    this.timers = { publisher: 0, subscriber: 0 };
    this.restartedAt = { publisher: 0, subscriber: 0 };
  }

  // changed follows a connection's connectionState.
  changed(target) {
    const pc = this.peer(target);
    if (!pc) return;
    const state = pc.connectionState;
    if (state === 'connected' || state === 'closed') this.clear(target);
    else if (state === 'failed') this.restart(target);
    else if (state === 'disconnected' && !this.timers[target]) this.later(target, DISCONNECTED_MS);
  }

  // check restarts a connection in use that is disconnected or failed or,
  // strict (after a resume), anything but connected.
  check(target, strict = false) {
    const pc = this.peer(target);
    if (!inUse(pc)) return;
    const state = pc.connectionState;
    if (state === 'disconnected' || state === 'failed' || (strict && state !== 'connected')) this.restart(target);
  }

  checkAll(strict = false) {
    for (const target of TARGETS) this.check(target, strict);
  }

  restart(target) {
    if (!this.canSignal()) return; // checked again after the resume
    this.clear(target);
    const wait = this.restartedAt[target] + RESTART_EVERY_MS - Date.now();
    if (wait > 0) {
      this.later(target, wait);
      return;
    }
    this.restartedAt[target] = Date.now();
    console.info('parley: restarting ICE on the', target, 'connection');
    this.restartPeer(target);
    this.later(target, RESTART_EVERY_MS); // not connected again by then: once more
  }

  later(target, ms) {
    clearTimeout(this.timers[target]);
    this.timers[target] = setTimeout(() => {
      this.timers[target] = 0;
      this.check(target);
    }, ms);
  }

  clear(target) {
    clearTimeout(this.timers[target]);
    this.timers[target] = 0;
  }

  // stop forgets the timers (the socket dropped, or the session ended).
  stop() {
    for (const target of TARGETS) this.clear(target);
  }
}
