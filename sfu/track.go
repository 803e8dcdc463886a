package sfu

import (
	"errors"
	"io"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	"github.com/pion/rtcp"
	"github.com/pion/webrtc/v4"
)

// keyframeInterval is the shortest time between two keyframe requests sent
// to one publisher track, however many subscribers ask (NOTES 14).
const keyframeInterval = 300 * time.Millisecond

// Track is one incoming (published) track. Its read loop is the only reader
// of the remote track; it stores each packet in the ring and hands the
// packet's number to every DownTrack without blocking.
type Track struct {
	sid    string
	cid    string
	kind   webrtc.RTPCodecType
	codec  webrtc.RTPCodecCapability
	remote *webrtc.TrackRemote
	log    *slog.Logger

	// sendPLI asks the publisher for a keyframe; nil for audio.
	sendPLI func()

	ring    ring
	lastNum uint64 // read loop only

	mu    sync.Mutex                   // serializes changes to downs
	downs atomic.Pointer[[]*DownTrack] // copy-on-write (NOTES 11)

	muted      atomic.Bool
	lastPLI    atomic.Int64 // unix nanoseconds
	pendingPLI atomic.Bool

	packets atomic.Uint64
	bytes   atomic.Uint64
	plis    atomic.Uint64
	stats   *engineStats // nil in unit tests

	done      chan struct{}
	closeOnce sync.Once
}

func newTrack(cid string, kind webrtc.RTPCodecType, codec webrtc.RTPCodecCapability, sendPLI func(), log *slog.Logger) *Track {
	t := &Track{cid: cid, kind: kind, codec: codec, sendPLI: sendPLI, log: log, done: make(chan struct{})}
	empty := []*DownTrack{}
	t.downs.Store(&empty)
	return t
}

// SID is the server's id of the track, set by Start.
func (t *Track) SID() string { return t.sid }

// CID is the publisher's id of the track (its MediaStreamTrack id).
func (t *Track) CID() string { return t.cid }

// Kind is audio or video.
func (t *Track) Kind() webrtc.RTPCodecType { return t.kind }

// Codec is the codec the publisher sends.
func (t *Track) Codec() webrtc.RTPCodecCapability { return t.codec }

// Done is closed when the track has ended.
func (t *Track) Done() <-chan struct{} { return t.done }

// Packets and Bytes count what the track received.
func (t *Track) Packets() uint64 { return t.packets.Load() }

// Subscribers counts the DownTracks fed by t.
func (t *Track) Subscribers() int { return len(*t.downs.Load()) }

// Bytes counts received RTP bytes.
func (t *Track) Bytes() uint64 { return t.bytes.Load() }

// Start names the track and starts its read loop.
func (t *Track) Start(sid string) {
	t.sid = sid
	go t.readLoop()
}

// SetMuted stops (or resumes) forwarding to every subscriber. On unmute the
// subscribers wait for a keyframe, which is requested at once.
func (t *Track) SetMuted(muted bool) {
	if t.muted.Swap(muted) == muted {
		return
	}
	if muted {
		return
	}
	// Resume right after the last packet sent, so the muted period leaves
	// no gap in sequence numbers; video resumes on a keyframe.
	for _, d := range *t.downs.Load() {
		d.resync.Store(true)
		if t.kind == webrtc.RTPCodecTypeVideo {
			d.needKeyframe.Store(true)
		}
	}
	if t.kind == webrtc.RTPCodecTypeVideo {
		t.RequestKeyframe()
	}
}

// Muted reports the mute state.
func (t *Track) Muted() bool { return t.muted.Load() }

// Close ends the track: every DownTrack stops receiving from it.
func (t *Track) Close() {
	t.closeOnce.Do(func() {
		close(t.done)
		if t.stats != nil {
			t.stats.endTrack(t)
		}
	})
}

func (t *Track) readLoop() {
	defer t.Close()
	buf := make([]byte, packetMTU)
	for {
		n, _, err := t.remote.Read(buf)
		if err != nil {
			if !errors.Is(err, io.EOF) {
				t.log.Debug("track read ended", "track", t.sid, "err", err)
			}
			return
		}
		select {
		case <-t.done:
			return
		default:
		}
		t.forward(buf[:n])
	}
}

// forward stores one packet and queues it to every subscriber. It is the
// per-packet hot path: no allocation, no lock held across a write.
func (t *Track) forward(pkt []byte) {
	if len(pkt) < 12 {
		return
	}
	t.packets.Add(1)
	t.bytes.Add(uint64(len(pkt)))
	t.lastNum++
	num := t.lastNum
	t.ring.put(num, pkt)
	if t.muted.Load() {
		return
	}
	for _, d := range *t.downs.Load() {
		d.enqueue(t, num)
	}
}

func (t *Track) addDown(d *DownTrack) {
	t.mu.Lock()
	old := *t.downs.Load()
	next := make([]*DownTrack, len(old), len(old)+1)
	copy(next, old)
	next = append(next, d)
	t.downs.Store(&next)
	t.mu.Unlock()
}

func (t *Track) removeDown(d *DownTrack) {
	t.mu.Lock()
	old := *t.downs.Load()
	next := make([]*DownTrack, 0, len(old))
	for _, x := range old {
		if x != d {
			next = append(next, x)
		}
	}
	t.downs.Store(&next)
	t.mu.Unlock()
}

// RequestKeyframe asks the publisher for a keyframe, at most once per
// keyframeInterval; a request inside the interval is sent when it ends.
func (t *Track) RequestKeyframe() {
	if t.sendPLI == nil {
		return
	}
	now := time.Now().UnixNano()
	last := t.lastPLI.Load()
	wait := time.Duration(last + int64(keyframeInterval) - now)
	if wait <= 0 {
		if t.lastPLI.CompareAndSwap(last, now) {
			t.plis.Add(1)
			t.sendPLI()
		}
		return
	}
	if t.pendingPLI.CompareAndSwap(false, true) {
		time.AfterFunc(wait, func() {
			t.pendingPLI.Store(false)
			select {
			case <-t.done:
				return
			default:
			}
			t.lastPLI.Store(time.Now().UnixNano())
			t.plis.Add(1)
			t.sendPLI()
		})
	}
}

// pliSender returns a function that sends a PLI for ssrc on pc.
func pliSender(pc *webrtc.PeerConnection, ssrc webrtc.SSRC) func() {
	return func() {
		_ = pc.WriteRTCP([]rtcp.Packet{&rtcp.PictureLossIndication{MediaSSRC: uint32(ssrc)}})
	}
}
