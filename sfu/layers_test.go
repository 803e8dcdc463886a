package sfu

import (
	"encoding/binary"
	"log/slog"
	"runtime"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/pion/rtp"
	"github.com/pion/webrtc/v4"
)

// recWriter records every packet a DownTrack writes.
type recWriter struct {
	pkts []rtp.Packet
}

func (w *recWriter) WriteRTP(h *rtp.Header, payload []byte) (int, error) {
	w.pkts = append(w.pkts, rtp.Packet{Header: *h, Payload: append([]byte(nil), payload...)})
	w.pkts[len(w.pkts)-1].Header.Extensions = nil
	return len(payload), nil
}

func (w *recWriter) Write(b []byte) (int, error) { return len(b), nil }

// simTrack is a simulcast track with layers q, h, f whose sizes and rates
// are known.
func simTrack() *Track {
	t := newTrackGroup("cam", webrtc.RTPCodecTypeVideo, vp8, []LayerDesc{
		{RID: "q", Width: 320, Height: 180}, {RID: "h", Width: 640, Height: 360}, {RID: "f", Width: 1280, Height: 720}}, slog.Default())
	t.simulcast = true
	for _, rid := range []string{"f", "q", "h"} { // any order
		t.addLayer(rid, nil, func() {})
	}
	t.sid = "TR_sim"
	rates := []uint64{150_000, 500_000, 1_500_000}
	now := time.Now().UnixNano()
	for i := range maxLayers {
		t.layer(i).rate.Store(rates[i])
		t.layer(i).lastAt.Store(now)
	}
	return t
}

// layerPacket is a VP8 packet of layer l: its own SSRC, sequence and
// timestamp spaces, and the layer index in the payload.
func layerPacket(l int, seq uint16, key bool) []byte {
	b := packet(seq+uint16(l)*10000, uint32(seq)*3000+uint32(l)*77777, key, 100)
	binary.BigEndian.PutUint32(b[8:12], uint32(1000+l))
	b[len(b)-1] = byte(l)
	return b
}

func boundRec(t *Track) (*DownTrack, *recWriter) {
	d := NewDownTrack(t, "s")
	w := &recWriter{}
	d.bind.Store(&binding{ssrc: 4242, pt: 96, rtxSSRC: 4343, rtxPT: 97, writer: w})
	t.addDown(d)
	t.layer(int(d.target.Load())).addDown(d)
	return d, w
}

func TestSimulcastLayersAreRankedByRID(t *testing.T) {
	tr := simTrack()
	if got := tr.Layers(); len(got) != 3 || got[0] != "q" || got[1] != "h" || got[2] != "f" {
		t.Fatalf("layers %v, want [q h f]", got)
	}
	if rank(nil, "f") != 2 || rank(nil, "x") != -1 || rank([]LayerDesc{{RID: "x"}, {RID: "y"}}, "y") != 1 {
		t.Fatal("rank")
	}
}

// TestLayerSwitchOnKeyframe: the DownTrack keeps forwarding its layer until
// the target layer's keyframe, then continues with no gap in sequence
// numbers and a timestamp that moves forward.
func TestLayerSwitchOnKeyframe(t *testing.T) {
	tr := simTrack()
	d, w := boundRec(tr)
	seq := uint16(1)
	send := func(l int, key bool) {
		tr.layer(l).forward(layerPacket(l, seq, key))
		drain(d)
	}
	// Starts on layer 0 at its keyframe.
	send(0, false)
	send(0, true)
	seq++
	send(0, false)
	if len(w.pkts) != 2 || d.Layer() != 0 {
		t.Fatalf("sent %d on layer %d, want 2 on layer 0", len(w.pkts), d.Layer())
	}
	d.setTarget(2)
	for i := 0; i < 5; i++ { // layer 2 delta frames: keep layer 0
		seq++
		send(2, false)
		send(0, false)
	}
	if d.Layer() != 0 {
		t.Fatalf("switched to %d before a keyframe", d.Layer())
	}
	seq++
	send(2, true)
	send(0, false) // old layer: dropped now
	seq++
	send(2, false)
	if d.Layer() != 2 {
		t.Fatalf("on layer %d after layer 2's keyframe", d.Layer())
	}
	for i, p := range w.pkts {
		if p.SSRC != 4242 || p.PayloadType != 96 {
			t.Fatalf("packet %d: ssrc %d pt %d", i, p.SSRC, p.PayloadType)
		}
		if i > 0 {
			prev := w.pkts[i-1]
			if p.SequenceNumber != prev.SequenceNumber+1 {
				t.Fatalf("packet %d: seq %d after %d", i, p.SequenceNumber, prev.SequenceNumber)
			}
			if int32(p.Timestamp-prev.Timestamp) < 0 {
				t.Fatalf("packet %d: timestamp went back", i)
			}
		}
	}
	last := w.pkts[len(w.pkts)-1]
	if last.Payload[len(last.Payload)-1] != 2 {
		t.Fatal("last packet is not from layer 2")
	}
	// Old layer detached: its packets are no longer queued.
	for _, x := range tr.layer(0).downs.load() {
		if x == d {
			t.Fatal("still attached to layer 0")
		}
	}
	// Down again, and paused.
	d.setTarget(1)
	seq++
	send(1, true)
	if d.Layer() != 1 {
		t.Fatalf("layer %d, want 1", d.Layer())
	}
	if d.switches.Load() != 2 {
		t.Fatalf("%d layer switches counted, want 2", d.switches.Load())
	}
	n := len(w.pkts)
	d.setTarget(-1)
	seq++
	send(1, true)
	send(1, false)
	if len(w.pkts) != n || d.Layer() != -1 {
		t.Fatalf("paused DownTrack sent %d packets", len(w.pkts)-n)
	}
	d.setTarget(0)
	seq++
	send(0, true)
	if got := w.pkts[len(w.pkts)-1].SequenceNumber; got != w.pkts[n-1].SequenceNumber+1 {
		t.Fatalf("after the pause seq %d, want %d", got, w.pkts[n-1].SequenceNumber+1)
	}
}

// TestNACKAnsweredFromRingWithRTX: a NACKed packet is resent from the
// layer's ring as RTX (original sequence number first), once per interval.
func TestNACKAnsweredFromRingWithRTX(t *testing.T) {
	tr := simTrack()
	d, w := boundRec(tr)
	for i := uint16(1); i <= 10; i++ {
		tr.layer(0).forward(layerPacket(0, i, i == 1))
	}
	drain(d)
	if len(w.pkts) != 10 {
		t.Fatalf("sent %d", len(w.pkts))
	}
	orig := w.pkts[4]
	// pretend it was sent long enough ago
	d.hist[orig.SequenceNumber&d.hmask].sentAt -= int64(time.Second)
	d.resend(orig.SequenceNumber)
	d.resend(orig.SequenceNumber) // too soon: ignored
	if len(w.pkts) != 11 {
		t.Fatalf("%d resends, want 1", len(w.pkts)-10)
	}
	rtx := w.pkts[10]
	if rtx.SSRC != 4343 || rtx.PayloadType != 97 {
		t.Fatalf("resend ssrc %d pt %d, want RTX 4343/97", rtx.SSRC, rtx.PayloadType)
	}
	if osn := binary.BigEndian.Uint16(rtx.Payload); osn != orig.SequenceNumber {
		t.Fatalf("OSN %d, want %d", osn, orig.SequenceNumber)
	}
	if string(rtx.Payload[2:]) != string(orig.Payload) || rtx.Timestamp != orig.Timestamp {
		t.Fatal("RTX payload or timestamp differs from the original")
	}
	if d.retx.Load() != 1 {
		t.Fatalf("retx %d", d.retx.Load())
	}
	// Without RTX negotiated the packet is resent as it was.
	b := *d.bind.Load()
	b.rtxSSRC = 0
	d.bind.Store(&b)
	other := w.pkts[6]
	d.hist[other.SequenceNumber&d.hmask].sentAt -= int64(time.Second)
	d.resend(other.SequenceNumber)
	again := w.pkts[len(w.pkts)-1]
	if again.SSRC != 4242 || again.SequenceNumber != other.SequenceNumber || string(again.Payload) != string(other.Payload) {
		t.Fatalf("plain resend: ssrc %d seq %d", again.SSRC, again.SequenceNumber)
	}
	// An unknown or overwritten number is not answered.
	n := len(w.pkts)
	d.resend(other.SequenceNumber + 1000)
	if len(w.pkts) != n {
		t.Fatal("answered a NACK for a packet never sent")
	}
}

func TestPaddingIsRTXOnly(t *testing.T) {
	tr := simTrack()
	d, w := boundRec(tr)
	tr.layer(0).forward(layerPacket(0, 1, true))
	drain(d)
	if !d.canPad() {
		t.Fatal("cannot pad with RTX bound")
	}
	d.sendPadding(1000)
	if len(w.pkts) != 1+4 {
		t.Fatalf("%d padding packets for 1000 bytes, want 4", len(w.pkts)-1)
	}
	for _, p := range w.pkts[1:] {
		if p.SSRC != 4343 || !p.Padding || p.Payload[len(p.Payload)-1] != byte(len(p.Payload)) {
			t.Fatalf("padding packet ssrc %d padding %v", p.SSRC, p.Padding)
		}
	}
}

// TestAllocateByBandwidth: the estimate decides the layers, audio first,
// every video at least its lowest layer, upgrades round robin.
func TestAllocateByBandwidth(t *testing.T) {
	now := time.Now().UnixNano()
	a, b := simTrack(), simTrack()
	da, db := NewDownTrack(a, "a"), NewDownTrack(b, "b")
	audio := newTrack("mic", webrtc.RTPCodecTypeAudio, webrtc.RTPCodecCapability{MimeType: webrtc.MimeTypeOpus, ClockRate: 48000}, nil, slog.Default())
	audio.layer(0).rate.Store(50_000)
	dau := NewDownTrack(audio, "a")
	downs := []*DownTrack{da, db, dau}
	cases := []struct {
		estimate int64
		want     [2]int32
	}{
		{100_000, [2]int32{0, 0}},       // below even the lowest: lowest anyway
		{700_000, [2]int32{1, 0}},       // 50k audio + 150k + 500k
		{1_300_000, [2]int32{1, 1}},     // both medium
		{2_100_000, [2]int32{2, 1}},     // one high
		{10_000_000, [2]int32{2, 2}},    // everything
		{-1 << 40, [2]int32{0, 0}},      // nonsense: lowest
		{3_100_000, [2]int32{2, 2}},     // 50k+1.5M+1.5M
		{3_000_000, [2]int32{2, 1}},     // just short
		{1_049_999, [2]int32{1, 0}},     // just short of two medium
		{1_050_000, [2]int32{1, 1}},     // exactly two medium
		{2_050_000, [2]int32{2, 1}},     // exactly one high, one medium
		{2_049_999, [2]int32{1, 1}},     // not quite
		{700_000, [2]int32{1, 0}},       // exactly audio + q + h + q
		{699_999, [2]int32{0, 0}},       // not quite
		{3_049_999, [2]int32{2, 1}},     // not quite both high
		{3_050_000, [2]int32{2, 2}},     // both high
		{100_000_000, [2]int32{2, 2}},   // plenty
		{0, [2]int32{0, 0}},             // nothing
		{350_000, [2]int32{0, 0}},       // audio + two lowest
		{2_000_000, [2]int32{1, 1}},     // 50+500+500=1050, next +1000=2050 > 2000
		{2_050_001, [2]int32{2, 1}},     // one high
		{1_000_000_000, [2]int32{2, 2}}, // lots
	}
	for _, c := range cases {
		da.target.Store(-1) // no hysteresis between cases: see below
		db.target.Store(-1)
		res := allocate(downs, c.estimate, now)
		got := [2]int32{da.target.Load(), db.target.Load()}
		if got != c.want {
			t.Errorf("estimate %d: layers %v, want %v", c.estimate, got, c.want)
		}
		if res.deficient != (got != [2]int32{2, 2}) {
			t.Errorf("estimate %d: deficient %v", c.estimate, res.deficient)
		}
	}
	if dau.target.Load() != 0 {
		t.Fatal("audio not forwarded")
	}
	// Hysteresis: a layer already forwarded is kept while the estimate
	// stays within a quarter of its rate, and given up below that.
	da.target.Store(2)
	db.target.Store(0)
	db.settings.Store(&TrackSettings{Quality: "low"})
	allocate(downs, 50_000+150_000+1_200_000, now) // audio + b's q + 80% of f
	if da.target.Load() != 2 {
		t.Fatalf("f dropped at 80%% of its rate: layer %d", da.target.Load())
	}
	allocate(downs, 50_000+150_000+1_000_000, now) // 67% of f
	if da.target.Load() != 1 {
		t.Fatalf("f kept at 67%% of its rate: layer %d", da.target.Load())
	}
}

// TestDesiredLayerFromSettings: size, quality and pause choose the layer
// before bandwidth does; a paused layer nobody sends falls back to a live
// one.
func TestDesiredLayerFromSettings(t *testing.T) {
	tr := simTrack()
	d := NewDownTrack(tr, "s")
	cases := []struct {
		s    TrackSettings
		want int
	}{
		{TrackSettings{}, 2},
		{TrackSettings{Width: 160, Height: 90}, 0},
		{TrackSettings{Width: 320, Height: 180}, 0},
		{TrackSettings{Width: 330, Height: 186}, 0}, // within 10%
		{TrackSettings{Width: 640, Height: 360}, 1},
		{TrackSettings{Width: 1000, Height: 500}, 2},
		{TrackSettings{Width: 4000, Height: 3000}, 2},
		{TrackSettings{Quality: "low"}, 0},
		{TrackSettings{Quality: "medium", Width: 1920, Height: 1080}, 1},
		{TrackSettings{Quality: "high", Width: 100, Height: 100}, 0},
		{TrackSettings{Paused: true}, -1},
	}
	for _, c := range cases {
		s := c.s
		d.settings.Store(&s)
		if got := d.desired(tr); got != c.want {
			t.Errorf("%+v: layer %d, want %d", c.s, got, c.want)
		}
	}
	// Sizes learned from keyframes when the publisher did not say.
	plain := newTrackGroup("cam", webrtc.RTPCodecTypeVideo, vp8, nil, slog.Default())
	plain.simulcast = true
	for _, rid := range []string{"q", "h", "f"} {
		plain.addLayer(rid, nil, func() {})
	}
	plain.layer(2).inspectVP8(vp8KeyPacket(1280, 720))
	if w, h := plain.layer(2).width.Load(), plain.layer(2).height.Load(); w != 1280 || h != 720 {
		t.Fatalf("size from keyframe %dx%d", w, h)
	}
	d2 := NewDownTrack(plain, "s")
	d2.settings.Store(&TrackSettings{Width: 600, Height: 340})
	if got := d2.desired(plain); got != 1 {
		t.Fatalf("inferred sizes: layer %d, want 1", got)
	}
	// Liveness: the wanted layer is paused at the publisher.
	now := time.Now().UnixNano()
	tr.layer(2).lastAt.Store(now - int64(5*time.Second))
	if got := liveLayer(tr, 2, now); got != 1 {
		t.Fatalf("live fallback %d, want 1", got)
	}
	tr.layer(0).lastAt.Store(0)
	tr.layer(1).lastAt.Store(0)
	if got := liveLayer(tr, 2, now); got != 2 {
		t.Fatalf("nothing live: %d, want the wanted layer", got)
	}
}

func vp8KeyPacket(w, h int) []byte {
	payload := []byte{0x10, 0x00, 0x00, 0x00, 0x9d, 0x01, 0x2a, byte(w), byte(w >> 8), byte(h), byte(h >> 8), 0, 0}
	p := rtp.Packet{Header: rtp.Header{Version: 2, PayloadType: 96, SequenceNumber: 1, SSRC: 1}, Payload: payload}
	b, _ := p.Marshal()
	return b
}

// vp9Packet is a VP9 packet in non-flexible mode with layer indices.
func vp9Packet(seq uint16, sid int, begin, end, key bool) []byte {
	b0 := byte(0xa0) // I, L
	if !key || sid > 0 {
		b0 |= 0x40 // P
	}
	if begin {
		b0 |= 0x08
	}
	if end {
		b0 |= 0x04
	}
	payload := []byte{b0, byte(seq & 0x7f), byte(sid << 1), 0}
	if key && sid == 0 && begin {
		// V: scalability structure with three sizes
		payload[0] |= 0x02
		payload = append(payload, 2<<5|0x10, 0x01, 0x40, 0x00, 0xb4, 0x02, 0x80, 0x01, 0x68, 0x05, 0x00, 0x02, 0xd0)
	}
	payload = append(payload, make([]byte, 50)...)
	p := rtp.Packet{Header: rtp.Header{Version: 2, PayloadType: 98, SequenceNumber: seq, Timestamp: uint32(seq/3) * 3000, SSRC: 9}, Payload: payload}
	out, _ := p.Marshal()
	return out
}

// TestVP9SVCSpatialFilter: a subscriber that wants spatial layer 1 gets
// layers 0 and 1 of every picture, with consecutive sequence numbers and
// the marker on the end of layer 1; moving up waits for a keyframe.
func TestVP9SVCSpatialFilter(t *testing.T) {
	vp9 := webrtc.RTPCodecCapability{MimeType: webrtc.MimeTypeVP9, ClockRate: 90000}
	tr := newTrack("svc", webrtc.RTPCodecTypeVideo, vp9, func() {}, slog.Default())
	tr.sid = "TR_svc"
	d, w := boundRec(tr)
	d.maxSpatial.Store(1)
	seq := uint16(100)
	picture := func(key bool) {
		for sid := 0; sid < 3; sid++ {
			tr.forward(vp9Packet(seq, sid, true, false, key))
			seq++
			tr.forward(vp9Packet(seq, sid, false, true, key))
			seq++
		}
	}
	picture(true)
	picture(false)
	drain(d)
	l := tr.layer(0)
	if l.svcLayers.Load() != 3 || l.svc[0].w.Load() != 320 || l.svc[2].h.Load() != 720 {
		t.Fatalf("scalability structure: %d layers, %dx%d", l.svcLayers.Load(), l.svc[0].w.Load(), l.svc[2].h.Load())
	}
	if len(w.pkts) != 8 {
		t.Fatalf("forwarded %d packets, want 8 (layers 0 and 1 of two pictures)", len(w.pkts))
	}
	for i, p := range w.pkts {
		var v vp9Desc
		v.parse(p.Payload)
		if v.sid > 1 {
			t.Fatalf("packet %d is spatial layer %d", i, v.sid)
		}
		if i > 0 && p.SequenceNumber != w.pkts[i-1].SequenceNumber+1 {
			t.Fatalf("packet %d: seq %d after %d", i, p.SequenceNumber, w.pkts[i-1].SequenceNumber)
		}
		if wantMarker := v.sid == 1 && v.end; p.Marker != wantMarker {
			t.Fatalf("packet %d (sid %d end %v): marker %v", i, v.sid, v.end, p.Marker)
		}
	}
	// Up to layer 2: not before a keyframe.
	d.maxSpatial.Store(2)
	picture(false)
	drain(d)
	if len(w.pkts) != 12 {
		t.Fatalf("%d packets, want 12: the switch up must wait for a keyframe", len(w.pkts))
	}
	picture(true)
	drain(d)
	if len(w.pkts) != 18 {
		t.Fatalf("%d packets after the keyframe, want 18", len(w.pkts))
	}
	// The size of the subscriber's tile picks the spatial layer.
	d.settings.Store(&TrackSettings{Width: 640, Height: 360})
	if got := d.spatialFor(l); got != 1 {
		t.Fatalf("spatial layer for 640x360: %d, want 1", got)
	}
}

func TestAudioLevel(t *testing.T) {
	p := rtp.Packet{Header: rtp.Header{Version: 2, PayloadType: 111, SequenceNumber: 1, SSRC: 5}, Payload: []byte{1, 2, 3}}
	_ = p.SetExtension(3, []byte{0x80 | 25})
	_ = p.SetExtension(1, []byte{0x42})
	b, _ := p.Marshal()
	if lvl, ok := audioLevel(b, 3); !ok || lvl != 25 {
		t.Fatalf("level %d %v, want 25", lvl, ok)
	}
	if _, ok := audioLevel(b, 4); ok {
		t.Fatal("found a level under a missing id")
	}
	tr := newTrack("mic", webrtc.RTPCodecTypeAudio, webrtc.RTPCodecCapability{MimeType: webrtc.MimeTypeOpus, ClockRate: 48000}, nil, slog.Default())
	tr.levelExt = 3
	tr.forward(b)
	tr.forward(b)
	if lvl, ok := tr.AudioLevel(); !ok || lvl < 0.05 || lvl > 0.06 {
		t.Fatalf("mean level %f, want 10^(-25/20)", lvl)
	}
	if _, ok := tr.AudioLevel(); ok {
		t.Fatal("level not reset")
	}
}

func FuzzRTPParsers(f *testing.F) {
	f.Add(vp9Packet(1, 0, true, false, true), uint8(1))
	f.Add(vp8KeyPacket(640, 480), uint8(3))
	f.Fuzz(func(t *testing.T, pkt []byte, id uint8) {
		_, _ = audioLevel(pkt, id)
		if hl := rtpHeaderLen(pkt); hl >= 0 {
			var v vp9Desc
			_ = v.parse(pkt[hl:])
			_, _, _ = vp8KeyframeSize(pkt[hl:])
		}
	})
}

// TestSwitchPathDoesNotAllocate: forwarding stays allocation free per
// packet; a layer switch costs only the copy-on-write of two layers'
// subscriber lists.
func TestSwitchPathDoesNotAllocate(t *testing.T) {
	tr := simTrack()
	d := NewDownTrack(tr, "s")
	d.bind.Store(&binding{ssrc: 1, pt: 96, writer: &fakeWriter{}})
	tr.addDown(d)
	tr.layer(0).addDown(d)
	pkts := [maxLayers][]byte{layerPacket(0, 1, true), layerPacket(1, 1, true), layerPacket(2, 1, true)}
	seq := uint16(1)
	step := func(i int) {
		seq++
		if i%100 == 99 {
			d.setTarget((i / 100) % maxLayers)
		}
		for k := range maxLayers {
			p := pkts[k]
			binary.BigEndian.PutUint16(p[2:], seq)
			tr.layer(k).forward(p)
		}
		drain(d)
	}
	for i := 0; i < 300; i++ { // warm up
		step(i)
	}
	const packets, switches = 3000, 30
	var before, after runtime.MemStats
	runtime.ReadMemStats(&before)
	for i := 0; i < packets; i++ {
		step(i)
	}
	runtime.ReadMemStats(&after)
	if d.packets.Load() < packets {
		t.Fatalf("forwarded %d packets", d.packets.Load())
	}
	if n := after.Mallocs - before.Mallocs; n > 6*switches {
		t.Fatalf("%d allocations for %d packets and %d layer switches, want at most %d (none per packet)", n, packets, switches, 6*switches)
	}
}

// BenchmarkForwardSimulcast: a three-layer track, one subscriber on the
// top layer; per incoming packet of the forwarded layer.
func BenchmarkForwardSimulcast(b *testing.B) {
	tr := simTrack()
	d, _ := bound(tr, 1)
	d.setTarget(2)
	p := layerPacket(2, 1, true)
	b.ReportAllocs()
	for i := 0; b.Loop(); i++ {
		binary.BigEndian.PutUint16(p[2:], uint16(i))
		tr.layer(2).forward(p)
		drain(d)
	}
}

// TestDynacast: the publisher is told to pause the layers no subscriber
// wants, after a hold, and to resume one as soon as somebody wants it.
func TestDynacast(t *testing.T) {
	tr := simTrack()
	var got [][]string
	tr.OnLayers(func(rids []string) { got = append(got, rids) })
	d1, d2 := NewDownTrack(tr, "a"), NewDownTrack(tr, "b")
	tr.addDown(d1)
	tr.addDown(d2)
	d1.want.Store(0)
	d2.want.Store(1)
	now := time.Now()
	tr.lastLayer.Store(now.Add(-time.Minute).UnixNano()) // not just published
	tr.updateActive(now)
	if len(got) != 1 || len(got[0]) != 2 || got[0][0] != "q" || got[0][1] != "h" {
		// f was never wanted since the track started
		t.Fatalf("first update %v, want [[q h]]", got)
	}
	d2.want.Store(0)
	tr.updateActive(now.Add(time.Second))
	if len(got) != 1 {
		t.Fatalf("h paused before the hold: %v", got)
	}
	tr.updateActive(now.Add(dynacastHold + time.Second))
	if len(got) != 2 || len(got[1]) != 1 || got[1][0] != "q" {
		t.Fatalf("after the hold %v, want [q]", got)
	}
	d1.want.Store(2)
	tr.updateActive(now.Add(dynacastHold + 2*time.Second))
	if len(got) != 3 || len(got[2]) != 2 || got[2][1] != "f" {
		t.Fatalf("f wanted again: %v", got)
	}
	// Nobody at all: every layer paused, after the hold.
	tr.removeDown(d1)
	tr.removeDown(d2)
	tr.updateActive(now.Add(3 * dynacastHold))
	if last := got[len(got)-1]; len(last) != 0 {
		t.Fatalf("no subscribers: %v, want []", last)
	}
	// A layer the publisher described but has not sent stays on while
	// somebody wants the nearest layer that came, and only then.
	late := newTrackGroup("cam", webrtc.RTPCodecTypeVideo, vp8, []LayerDesc{{RID: "q"}, {RID: "h"}, {RID: "f"}}, slog.Default())
	late.simulcast = true
	late.addLayer("q", nil, func() {})
	late.addLayer("h", nil, func() {})
	var lateGot [][]string
	late.OnLayers(func(rids []string) { lateGot = append(lateGot, rids) })
	late.lastLayer.Store(now.Add(-time.Minute).UnixNano())
	big := NewDownTrack(late, "big")
	late.addDown(big)
	big.want.Store(1) // h, the best there is
	late.updateActive(now)
	if len(lateGot) != 1 || !slices.Equal(lateGot[0], []string{"h", "f"}) {
		t.Fatalf("a subscriber on h, f never came: %v, want [[h f]]", lateGot)
	}
	// Everyone small (TestBrowserSimulcast's dynacast step when the
	// publisher's own estimate kept f from starting): only q.
	big.want.Store(0)
	late.updateActive(now.Add(dynacastHold + time.Second))
	if len(lateGot) != 2 || !slices.Equal(lateGot[1], []string{"q"}) {
		t.Fatalf("everyone on q, f never came: %v, want q only", lateGot)
	}
	// Nobody: nothing, f included.
	late.removeDown(big)
	late.updateActive(now.Add(3 * dynacastHold))
	if last := lateGot[len(lateGot)-1]; len(last) != 0 {
		t.Fatalf("nobody watches a track whose f never came: %v, want []", last)
	}
	// No layer arrived yet: the described ones stay on.
	none := newTrackGroup("cam", webrtc.RTPCodecTypeVideo, vp8, []LayerDesc{{RID: "q"}, {RID: "f"}}, slog.Default())
	if !none.neighbourWanted(1, now) {
		t.Fatal("with no layer arrived, a described one was paused")
	}
	// A track that was just published keeps every layer on.
	fresh := simTrack()
	var calls int
	fresh.OnLayers(func([]string) { calls++ })
	fresh.lastLayer.Store(time.Now().UnixNano())
	fresh.updateActive(time.Now())
	if calls != 0 {
		t.Fatal("a fresh track's layers were paused")
	}
}

// TestTargetChangeDuringDetach: the allocator makes a layer the target just
// as the writer decided to detach from it (it was not the target when the
// writer looked). The DownTrack must end up attached to its target.
func TestTargetChangeDuringDetach(t *testing.T) {
	tr := simTrack()
	d, w := boundRec(tr) // target 0, attached to layer 0
	tr.layer(0).forward(layerPacket(0, 1, true))
	drain(d)
	tr.layer(2).addDown(d) // a stale attachment, as after a target change
	var set sync.WaitGroup
	d.beforeDetach = func(l *Layer) {
		set.Add(1)
		go func() { defer set.Done(); d.setTarget(2) }()
		time.Sleep(20 * time.Millisecond) // let the allocator run, if it can
	}
	tr.layer(2).forward(layerPacket(2, 2, false)) // not the target: detach
	drain(d)
	d.beforeDetach = nil
	set.Wait()
	attached := false
	for _, x := range tr.layer(2).downs.load() {
		attached = attached || x == d
	}
	if d.target.Load() != 2 || !attached {
		t.Fatalf("target %d, attached to layer 2: %v", d.target.Load(), attached)
	}
	tr.layer(2).forward(layerPacket(2, 3, true))
	drain(d)
	if d.Layer() != 2 || len(w.pkts) != 2 {
		t.Fatalf("on layer %d after %d packets", d.Layer(), len(w.pkts))
	}
}

// TestTargetChangesNeverLoseTheLayer: the allocator changes a DownTrack's
// target while its writer drops packets of other layers; whatever the
// interleaving, the DownTrack stays attached to its target and receives it.
func TestTargetChangesNeverLoseTheLayer(t *testing.T) {
	tr := simTrack()
	d := NewDownTrack(tr, "s")
	d.bind.Store(&binding{ssrc: 1, pt: 96, writer: &fakeWriter{}})
	d.Run(nil)
	defer d.Close()
	stop := make(chan struct{})
	done := make(chan struct{})
	go func() { // the allocator
		defer close(done)
		for i := 0; ; i++ {
			select {
			case <-stop:
				return
			default:
			}
			d.setTarget(i%4 - 1) // -1 (paused), 0, 1, 2
			runtime.Gosched()
		}
	}()
	seq := uint16(1)
	deadline := time.Now().Add(500 * time.Millisecond)
	for time.Now().Before(deadline) {
		seq++
		for k := range maxLayers {
			tr.layer(k).forward(layerPacket(k, seq, true))
		}
	}
	close(stop)
	<-done
	for _, want := range []int{2, 0, 1} {
		d.setTarget(want)
		before := d.packets.Load()
		waitUntil := time.Now().Add(2 * time.Second)
		for d.packets.Load() < before+20 && time.Now().Before(waitUntil) {
			seq++
			for k := range maxLayers {
				tr.layer(k).forward(layerPacket(k, seq, true))
			}
			time.Sleep(time.Millisecond)
		}
		if d.packets.Load() < before+20 || d.Layer() != want {
			attached := false
			for _, x := range tr.layer(want).downs.load() {
				attached = attached || x == d
			}
			t.Fatalf("target %d: %d packets forwarded, on layer %d, attached to it: %v", want, d.packets.Load()-before, d.Layer(), attached)
		}
	}
}

// TestLayerSwitchAsksAgainForALostKeyframe: a DownTrack that goes on
// forwarding its current layer while it waits for the target layer's
// keyframe asks for it again after keyframeRetry (the current layer's
// packets do not restart the wait).
func TestLayerSwitchAsksAgainForALostKeyframe(t *testing.T) {
	tr := newTrackGroup("cam", webrtc.RTPCodecTypeVideo, vp8, []LayerDesc{{RID: "q"}, {RID: "f"}}, slog.Default())
	tr.simulcast = true
	plis := make([]int, 2)
	for i, rid := range []string{"q", "f"} {
		tr.addLayer(rid, nil, func() { plis[i]++ })
	}
	tr.sid = "TR_kf"
	d, w := boundRec(tr)
	seq := uint16(1)
	send := func(l int, key bool) {
		tr.layer(l).forward(layerPacket(l, seq, key))
		seq++
		drain(d)
	}
	send(0, true)
	d.setTarget(1)
	asked := plis[1]
	for i := 0; i < 10; i++ {
		send(1, false)
		send(0, false)
	}
	if plis[1] != asked || d.Layer() != 0 {
		t.Fatalf("within keyframeRetry: %d more PLIs for f, on layer %d", plis[1]-asked, d.Layer())
	}
	d.kfAsked = d.kfAsked.Add(-keyframeRetry)
	tr.layer(1).lastPLI.Store(0) // the layer's own throttle has passed too
	send(0, false)               // the current layer goes on
	send(1, false)
	if plis[1] != asked+1 || d.kfRetries.Load() != 1 {
		t.Fatalf("after keyframeRetry: %d more PLIs for f, %d retries; want 1", plis[1]-asked, d.kfRetries.Load())
	}
	send(1, true)
	if d.Layer() != 1 || !d.kfAsked.IsZero() {
		t.Fatalf("on layer %d, waiting since %v after f's keyframe", d.Layer(), d.kfAsked)
	}
	if len(w.pkts) < 12 {
		t.Fatalf("forwarded %d packets", len(w.pkts))
	}
}

// TestEndedTrackDetachesItsDownTracks: a track that ends leaves no
// DownTrack attached to it or its layers, one attaching at the same moment
// included, and attaching costs no goroutine per DownTrack.
func TestEndedTrackDetachesItsDownTracks(t *testing.T) {
	attached := func(tr *Track, d *DownTrack) bool {
		if tr.all.has(d) {
			return true
		}
		for i := range maxLayers {
			if l := tr.layer(i); l != nil && l.downs.has(d) {
				return true
			}
		}
		return false
	}
	tr := simTrack()
	before := runtime.NumGoroutine()
	var downs []*DownTrack
	for range 100 {
		d := NewDownTrack(tr, "s")
		d.attach(tr)
		downs = append(downs, d)
	}
	if n := runtime.NumGoroutine() - before; n >= 50 {
		t.Fatalf("attaching 100 DownTracks started %d goroutines", n)
	}
	if !attached(tr, downs[0]) || !attached(tr, downs[99]) {
		t.Fatal("not attached")
	}
	tr.Close()
	for i, d := range downs {
		if attached(tr, d) {
			t.Fatalf("DownTrack %d still attached to the ended track", i)
		}
	}
	late := NewDownTrack(tr, "s")
	late.attach(tr)
	if attached(tr, late) {
		t.Fatal("a DownTrack attached after the end stays attached")
	}
	// Attaching while the track ends (run with -race).
	for round := range 200 {
		tr := simTrack()
		ds := []*DownTrack{NewDownTrack(tr, "a"), NewDownTrack(tr, "b"), NewDownTrack(tr, "c")}
		var wg sync.WaitGroup
		for _, d := range ds {
			wg.Add(1)
			go func() {
				defer wg.Done()
				d.attach(tr)
			}()
		}
		tr.Close()
		wg.Wait()
		for i, d := range ds {
			if attached(tr, d) {
				t.Fatalf("round %d: DownTrack %d attached as the track ended stays attached", round, i)
			}
		}
	}
}
