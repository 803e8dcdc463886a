// Simulcast on the publisher connection (docs/protocol.md, "Simulcast
// layers in tracks" and "set_layers"): the camera is sent as three
// encodings of one track, and the server tells us which of them somebody
// watches, so that the others are not encoded at all (dynacast).

// CAMERA_LAYERS are the camera's encodings, lowest quality first, as the
// offer lists them. From a 1280x720 capture: 320x180, 640x360, 1280x720.
export const CAMERA_LAYERS = Object.freeze([
  Object.freeze({ rid: 'q', scaleResolutionDownBy: 4, maxBitrate: 150000 }),
  Object.freeze({ rid: 'h', scaleResolutionDownBy: 2, maxBitrate: 500000 }),
  Object.freeze({ rid: 'f', scaleResolutionDownBy: 1, maxBitrate: 1500000 }),
]);

// CAMERA_CONSTRAINTS asks for a capture large enough for three layers
// (browsers drop the top layers of small captures).
export const CAMERA_CONSTRAINTS = Object.freeze({ width: { ideal: 1280 }, height: { ideal: 720 } });

// sendEncodings is what addTransceiver gets for a camera track.
export function sendEncodings() {
  return CAMERA_LAYERS.map((l) => ({ ...l, active: true }));
}

// isSimulcast: the sender sends more than one RID encoding (a browser that
// refuses simulcast keeps only the first, or drops the rids).
export function isSimulcast(sender) {
  const enc = sender.getParameters().encodings || [];
  return enc.length > 1 && enc.every((e) => e.rid);
}

// describeLayers lists a simulcast sender's layers for the offer's
// tracks[].layers, lowest first; undefined for a single encoding.
export function describeLayers(sender) {
  if (!isSimulcast(sender)) return undefined;
  const s = (sender.track && sender.track.getSettings()) || {};
  const scale = (e) => e.scaleResolutionDownBy || 1;
  return [...sender.getParameters().encodings]
    .sort((a, b) => scale(b) - scale(a)) // the largest downscale is the lowest layer
    .map((e) => {
      const l = { rid: e.rid };
      if (s.width > 0 && s.height > 0) {
        l.width = Math.round(s.width / scale(e));
        l.height = Math.round(s.height / scale(e));
      }
      if (e.maxBitrate > 0) l.max_bitrate = e.maxBitrate;
      return l;
    });
}

// Dynacast applies set_layers to our senders. setParameters calls on one
// sender are chained (two at once fail), and only the latest wish is
// applied.
export class Dynacast {
  constructor() {
    this.wanted = new WeakMap(); // RTCRtpSender -> Set of rids to send
    this.busy = new WeakMap(); // RTCRtpSender -> Promise of the running update
  }

  // apply makes the sender encode exactly the rids in active (an empty
  // list: none, nobody watches). A sender without rids is left alone.
  apply(sender, active) {
    this.wanted.set(sender, new Set(active || []));
    if (this.busy.get(sender)) return this.busy.get(sender);
    const run = (async () => {
      try {
        for (;;) {
          const want = this.wanted.get(sender);
          const params = sender.getParameters();
          const enc = params.encodings || [];
          if (enc.length === 0 || !enc.every((e) => e.rid)) return;
          let changed = false;
          for (const e of enc) {
            const on = want.has(e.rid);
            if (e.active !== on) {
              e.active = on;
              changed = true;
            }
          }
          if (changed) await sender.setParameters(params);
          if (this.wanted.get(sender) === want) return;
        }
      } catch (e) {
        console.warn('parley: set_layers', e);
      } finally {
        this.busy.delete(sender);
      }
    })();
    this.busy.set(sender, run);
    return run;
  }

  // active lists the rids a sender encodes now.
  static active(sender) {
    return (sender.getParameters().encodings || []).filter((e) => e.active !== false).map((e) => e.rid || '');
  }
}
