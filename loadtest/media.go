package loadtest

import (
	"context"
	"encoding/binary"
	"math/rand/v2"
	"sync"
	"sync/atomic"
	"time"

	"github.com/pion/rtp"
	"github.com/pion/webrtc/v4"
)

// Synthetic media: well-formed VP8 and Opus RTP whose payloads carry the
// send time (unix nanoseconds), so that a subscriber on the same machine
// measures the one-way forwarding latency of every packet.
//
// Video payload: a 2-byte prefix — the VP8 payload descriptor (S=1 on a
// frame's first packet) and a VP8 header byte whose low bit is 0 on
// keyframes — then the send time, then filler. Audio payload: the send
// time, then filler.

const (
	videoFPS     = 30
	maxVideoLoad = 1100 // payload bytes per video packet
	audioEvery   = 20 * time.Millisecond
	audioPayload = 80
)

// sendCounters count what publishers sent.
type sendCounters struct{ packets, bytes atomic.Uint64 }

// sendVideo sends frames of bitrate/8/30 bytes at 30 fps, a keyframe every
// keyEvery, until ctx ends.
func sendVideo(ctx context.Context, tr *webrtc.TrackLocalStaticRTP, bitrate int, keyEvery time.Duration, sc *sendCounters) {
	frameBytes := max(bitrate/8/videoFPS, 12)
	pkt := &rtp.Packet{Header: rtp.Header{Version: 2, SequenceNumber: uint16(rand.Uint32()), Timestamp: rand.Uint32()}}
	buf := make([]byte, maxVideoLoad)
	for i := range buf {
		buf[i] = byte(i)
	}
	tick := time.NewTicker(time.Second / videoFPS)
	defer tick.Stop()
	lastKey := time.Time{}
	for {
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
		}
		now := time.Now()
		key := now.Sub(lastKey) >= keyEvery
		if key {
			lastKey = now
		}
		left := frameBytes
		for first := true; left > 0; first = false {
			n := min(left, maxVideoLoad)
			left -= n
			p := buf[:max(n, 10)]
			p[0], p[1] = 0x00, 0x01
			if first {
				p[0] = 0x10
				if key {
					p[1] = 0x00
				}
			}
			binary.BigEndian.PutUint64(p[2:10], uint64(time.Now().UnixNano()))
			pkt.Payload = p
			pkt.Marker = left == 0
			if tr.WriteRTP(pkt) != nil {
				return
			}
			pkt.SequenceNumber++
			sc.packets.Add(1)
			sc.bytes.Add(uint64(len(p) + 12))
		}
		pkt.Timestamp += 90000 / videoFPS
	}
}

// sendAudio sends an 80-byte Opus packet every 20 ms until ctx ends.
func sendAudio(ctx context.Context, tr *webrtc.TrackLocalStaticRTP, sc *sendCounters) {
	pkt := &rtp.Packet{Header: rtp.Header{Version: 2, SequenceNumber: uint16(rand.Uint32()), Timestamp: rand.Uint32()}}
	buf := make([]byte, audioPayload)
	tick := time.NewTicker(audioEvery)
	defer tick.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
		}
		binary.BigEndian.PutUint64(buf[:8], uint64(time.Now().UnixNano()))
		pkt.Payload = buf
		if tr.WriteRTP(pkt) != nil {
			return
		}
		pkt.SequenceNumber++
		pkt.Timestamp += 960
		sc.packets.Add(1)
		sc.bytes.Add(uint64(len(buf) + 12))
	}
}

// maxSamples bounds the latency samples one track keeps (reservoir).
const maxSamples = 100_000

// receiver adds up what the subscribers of a run receive.
type receiver struct {
	packets, bytes atomic.Uint64
	lossy          atomic.Uint64 // packets missing by sequence number so far

	mu      sync.Mutex
	tracks  []*trackStats
	stopped bool
}

type trackStats struct {
	expected atomic.Uint64
	samples  []uint32 // latency, microseconds; the reading goroutine's own until it ends
	done     chan struct{}
}

// read reads one remote track until it ends, counting packets, sequence
// gaps and latency.
func (r *receiver) read(tr *webrtc.TrackRemote) {
	ts := &trackStats{done: make(chan struct{})}
	r.mu.Lock()
	if r.stopped {
		r.mu.Unlock()
		return
	}
	r.tracks = append(r.tracks, ts)
	r.mu.Unlock()
	defer close(ts.done)
	video := tr.Kind() == webrtc.RTPCodecTypeVideo
	buf := make([]byte, 1500)
	var h rtp.Header
	var first, highest int64 // extended sequence numbers
	started := false
	seen := 0
	for {
		n, _, err := tr.Read(buf)
		if err != nil {
			return
		}
		at := time.Now().UnixNano()
		hl, err := h.Unmarshal(buf[:n])
		if err != nil {
			continue
		}
		// Extend the 16-bit sequence number by its distance to the highest
		// so far (reordering and wrap-around both fine).
		ext := int64(h.SequenceNumber)
		if started {
			ext = highest + int64(int16(h.SequenceNumber-uint16(highest)))
		} else {
			first, highest, started = ext, ext, true
		}
		if ext > highest {
			if gap := ext - highest - 1; gap > 0 {
				r.lossy.Add(uint64(gap))
			}
			highest = ext
		}
		ts.expected.Store(uint64(highest - first + 1))
		r.packets.Add(1)
		r.bytes.Add(uint64(n))
		payload := buf[hl:n]
		off := 0
		if video {
			off = 2
		}
		if len(payload) < off+8 {
			continue
		}
		sent := int64(binary.BigEndian.Uint64(payload[off : off+8]))
		lat := (at - sent) / 1000
		if lat < 0 || lat > 60_000_000 {
			continue // not one of ours
		}
		seen++
		if len(ts.samples) < maxSamples {
			ts.samples = append(ts.samples, uint32(lat))
		} else if j := rand.IntN(seen); j < maxSamples {
			ts.samples[j] = uint32(lat)
		}
	}
}

// expected is how many packets the subscribers should have had so far.
func (r *receiver) expected() uint64 {
	r.mu.Lock()
	defer r.mu.Unlock()
	var n uint64
	for _, t := range r.tracks {
		n += t.expected.Load()
	}
	return n
}

// finish waits (at most wait) for the read loops, whose tracks must be
// closed, and returns every latency sample.
func (r *receiver) finish(wait time.Duration) []uint32 {
	r.mu.Lock()
	r.stopped = true
	tracks := append([]*trackStats(nil), r.tracks...)
	r.mu.Unlock()
	deadline := time.After(wait)
	var all []uint32
	for _, t := range tracks {
		select {
		case <-t.done:
			all = append(all, t.samples...)
		case <-deadline:
			return all
		}
	}
	return all
}
