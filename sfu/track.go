package sfu

import (
	"log/slog"
	"math"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/pion/rtcp"
	"github.com/pion/webrtc/v4"
)

// keyframeInterval is the shortest time between two keyframe requests sent
// to one publisher stream, however many subscribers ask (NOTES 14).
const keyframeInterval = 300 * time.Millisecond

// LayerDesc is what a publisher says about one simulcast encoding.
type LayerDesc struct {
	RID           string
	Width, Height int
	MaxBitrate    uint64 // bits/s
}

// Track is one published track. It has one Layer, or one per simulcast
// encoding (up to three, lowest quality first); each DownTrack forwards one
// of them.
type Track struct {
	sid   string
	cid   string
	kind  webrtc.RTPCodecType
	codec webrtc.RTPCodecCapability
	vp8   bool
	vp9   bool
	log   *slog.Logger

	desc      []LayerDesc // the publisher's description, lowest first
	simulcast bool

	lmu    sync.Mutex // serializes changes to layers
	layers [maxLayers]atomic.Pointer[Layer]

	all   downSet // every subscriber, whatever its layer
	muted atomic.Bool

	// audio level (RFC 6464), summed between two AudioLevel calls
	levelExt uint8
	levelSum atomic.Uint64 // linear amplitude × 1e6
	levelN   atomic.Uint64

	// dynacast: the layers some subscriber wants
	onLayers  atomic.Pointer[func(rids []string)]
	activeMu  sync.Mutex
	active    []string
	wantedAt  [maxLayers]time.Time
	lastLayer atomic.Int64 // unix nanoseconds a layer was last added

	stats *engineStats // nil in unit tests

	// writeRTCP sends RTCP to the publisher (the layers' NACKs); nil in
	// unit tests.
	writeRTCP func([]rtcp.Packet) error

	// onFirst is called by each layer's read loop after its first packet
	// (the publisher's direct receive path, recv.go); nil: nothing to do.
	onFirst func(*Layer)

	started   atomic.Bool
	ended     atomic.Int32 // layers whose read loop ended
	done      chan struct{}
	closeOnce sync.Once
}

// newTrack makes a track with one layer (not simulcast).
func newTrack(cid string, kind webrtc.RTPCodecType, codec webrtc.RTPCodecCapability, sendPLI func(), log *slog.Logger) *Track {
	t := newTrackGroup(cid, kind, codec, nil, log)
	t.layers[0].Store(newLayer(t, 0, "", sendPLI))
	return t
}

func newTrackGroup(cid string, kind webrtc.RTPCodecType, codec webrtc.RTPCodecCapability, desc []LayerDesc, log *slog.Logger) *Track {
	t := &Track{cid: cid, kind: kind, codec: codec, desc: desc, log: log, done: make(chan struct{}),
		vp8: strings.EqualFold(codec.MimeType, webrtc.MimeTypeVP8), vp9: strings.EqualFold(codec.MimeType, webrtc.MimeTypeVP9)}
	return t
}

// rank orders simulcast RIDs: by the publisher's description, else q < h <
// f (and l < m < h, 0 < 1 < 2); -1 when unknown.
func rank(desc []LayerDesc, rid string) int {
	for i, d := range desc {
		if d.RID == rid {
			return min(i, maxLayers-1)
		}
	}
	for _, order := range [][]string{{"q", "h", "f"}, {"l", "m", "h"}, {"0", "1", "2"}, {"low", "mid", "high"}} {
		if i := slices.Index(order, rid); i >= 0 {
			return i
		}
	}
	return -1
}

// addLayer adds one simulcast encoding; nil when the track already has as
// many as it can take.
func (t *Track) addLayer(rid string, remote *webrtc.TrackRemote, sendPLI func()) *Layer {
	t.lmu.Lock()
	defer t.lmu.Unlock()
	idx := rank(t.desc, rid)
	if idx < 0 || t.layers[idx].Load() != nil {
		idx = -1
		for i := range maxLayers {
			if t.layers[i].Load() == nil {
				idx = i
				break
			}
		}
		if idx < 0 {
			return nil
		}
	}
	l := newLayer(t, idx, rid, sendPLI)
	l.remote = remote
	for _, d := range t.desc {
		if d.RID == rid {
			l.maxBitrate = d.MaxBitrate
			l.width.Store(uint32(max(d.Width, 0)))
			l.height.Store(uint32(max(d.Height, 0)))
		}
	}
	t.layers[idx].Store(l)
	t.lastLayer.Store(time.Now().UnixNano())
	if t.started.Load() {
		go l.readLoop()
	}
	return l
}

// layer returns layer i, or nil.
func (t *Track) layer(i int) *Layer {
	if i < 0 || i >= maxLayers {
		return nil
	}
	return t.layers[i].Load()
}

func (t *Track) layerCount() int {
	n := 0
	for i := range maxLayers {
		if t.layers[i].Load() != nil {
			n++
		}
	}
	return n
}

// top is the index of the highest layer, or -1.
func (t *Track) top() int {
	for i := maxLayers - 1; i >= 0; i-- {
		if t.layers[i].Load() != nil {
			return i
		}
	}
	return -1
}

// SID is the server's id of the track, set by Start.
func (t *Track) SID() string { return t.sid }

// CID is the publisher's id of the track (its MediaStreamTrack id).
func (t *Track) CID() string { return t.cid }

// Kind is audio or video.
func (t *Track) Kind() webrtc.RTPCodecType { return t.kind }

// Codec is the codec the publisher sends.
func (t *Track) Codec() webrtc.RTPCodecCapability { return t.codec }

// Simulcast reports whether the track has RID layers.
func (t *Track) Simulcast() bool { return t.simulcast }

// Layers lists the RIDs of the track's layers, lowest first.
func (t *Track) Layers() []string {
	var out []string
	for i := range maxLayers {
		if l := t.layer(i); l != nil {
			out = append(out, l.rid)
		}
	}
	return out
}

// isDone reports whether the track has ended.
func (t *Track) isDone() bool {
	select {
	case <-t.done:
		return true
	default:
		return false
	}
}

// Done is closed when the track has ended.
func (t *Track) Done() <-chan struct{} { return t.done }

// sum adds one counter of every layer.
func (t *Track) sum(counter func(*Layer) *atomic.Uint64) uint64 {
	var n uint64
	for i := range maxLayers {
		if l := t.layer(i); l != nil {
			n += counter(l).Load()
		}
	}
	return n
}

// Packets counts what the track received, all layers together.
func (t *Track) Packets() uint64 { return t.sum(func(l *Layer) *atomic.Uint64 { return &l.packets }) }

// Bytes counts received RTP bytes, all layers together.
func (t *Track) Bytes() uint64 { return t.sum(func(l *Layer) *atomic.Uint64 { return &l.bytes }) }

func (t *Track) plis() uint64 { return t.sum(func(l *Layer) *atomic.Uint64 { return &l.plis }) }

func (t *Track) nacksSent() uint64 {
	return t.sum(func(l *Layer) *atomic.Uint64 { return &l.nacksSent })
}

// fanDrops counts the packets the layers' fan-out goroutines were too far
// behind to take (Layer.handOff).
func (t *Track) fanDrops() uint64 { return t.sum(func(l *Layer) *atomic.Uint64 { return &l.fanDrops }) }

// Subscribers counts the DownTracks fed by t.
func (t *Track) Subscribers() int { return len(t.all.load()) }

// Start names the track and starts the read loops of its layers.
func (t *Track) Start(sid string) {
	t.sid = sid
	t.lmu.Lock()
	t.started.Store(true)
	for i := range maxLayers {
		if l := t.layer(i); l != nil && l.remote != nil {
			go l.readLoop()
		}
	}
	t.lmu.Unlock()
	if t.simulcast {
		go t.dynacastLoop()
	}
}

// layerEnded ends the track when its last layer's stream ends.
func (t *Track) layerEnded(*Layer) {
	if int(t.ended.Add(1)) >= t.layerCount() {
		t.Close()
	}
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
	for _, d := range t.all.load() {
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
		// Detach its subscribers' copies. One attaching at the same time
		// finds done closed and detaches itself (DownTrack.attach), so
		// no goroutine per DownTrack has to wait for the end.
		for _, d := range t.all.load() {
			t.removeDown(d)
		}
		if t.stats != nil {
			t.stats.endTrack(t)
		}
	})
}

func (t *Track) addDown(d *DownTrack) { t.all.add(d) }

// removeDown detaches d from the track and every layer.
func (t *Track) removeDown(d *DownTrack) {
	t.all.remove(d)
	for i := range maxLayers {
		if l := t.layer(i); l != nil {
			l.removeDown(d)
		}
	}
}

// RequestKeyframe asks the publisher for a keyframe on every layer.
func (t *Track) RequestKeyframe() {
	for i := range maxLayers {
		if l := t.layer(i); l != nil {
			l.RequestKeyframe()
		}
	}
}

// addLevel adds one audio level sample (RFC 6464: 0 is loudest, in -dBov).
func (t *Track) addLevel(dBov uint8) {
	amp := math.Pow(10, -float64(dBov)/20)
	t.levelSum.Add(uint64(amp * 1e6))
	t.levelN.Add(1)
}

// AudioLevel is the mean linear audio level (0-1) of the packets received
// since the last call, and whether any carried a level.
func (t *Track) AudioLevel() (float64, bool) {
	n := t.levelN.Swap(0)
	sum := t.levelSum.Swap(0)
	if n == 0 {
		return 0, false
	}
	return float64(sum) / 1e6 / float64(n), true
}

// OnLayers sets the function told which simulcast layers some subscriber
// wants (dynacast), when that set changes.
func (t *Track) OnLayers(f func(rids []string)) { t.onLayers.Store(&f) }

// dynacastHold is how long a layer nobody wants keeps being sent before the
// publisher is told to pause it.
const dynacastHold = 3 * time.Second

func (t *Track) dynacastLoop() {
	tick := time.NewTicker(500 * time.Millisecond)
	defer tick.Stop()
	for {
		select {
		case <-t.done:
			return
		case <-tick.C:
			t.updateActive(time.Now())
		}
	}
}

// updateActive recomputes the layers subscribers want; a layer is added at
// once and dropped dynacastHold after the last subscriber stopped wanting
// it. Layers stay on while the track has just been published.
func (t *Track) updateActive(now time.Time) {
	if !t.simulcast {
		return
	}
	f := t.onLayers.Load()
	if f == nil {
		return
	}
	t.activeMu.Lock()
	defer t.activeMu.Unlock()
	for _, d := range t.all.load() {
		for _, i := range [2]int32{d.want.Load(), d.curIdx.Load()} {
			if i >= 0 && i < maxLayers {
				t.wantedAt[i] = now
			}
		}
	}
	fresh := now.UnixNano()-t.lastLayer.Load() < int64(dynacastHold)
	var active []string
	for i := range maxLayers {
		l := t.layer(i)
		if l == nil {
			continue
		}
		if fresh || now.Sub(t.wantedAt[i]) < dynacastHold {
			active = append(active, l.rid)
		}
	}
	// A layer the publisher described but has not sent (its encoder has
	// not started it, e.g. its own bandwidth estimate is still low) stays
	// on while a subscriber wants the nearest layer that did arrive, above
	// or below it: that subscriber would move to it once it comes, and
	// pausing it would keep it unseen for good. Nobody near it: it is
	// paused like any other, or it would keep the encoder busy for nobody.
	for i, d := range t.desc {
		if t.hasRID(d.RID) || slices.Contains(active, d.RID) {
			continue
		}
		if fresh || t.neighbourWanted(i, now) {
			active = append(active, d.RID)
		}
	}
	if t.active != nil && slices.Equal(active, t.active) {
		return
	}
	if t.active == nil && t.allOn(active) {
		t.active = active // the publisher starts with every layer on
		return
	}
	if active == nil {
		active = []string{}
	}
	t.active = active
	(*f)(slices.Clone(active))
}

// allOn reports whether active holds every layer, arrived or described.
func (t *Track) allOn(active []string) bool {
	for i := range maxLayers {
		if l := t.layer(i); l != nil && !slices.Contains(active, l.rid) {
			return false
		}
	}
	for _, d := range t.desc {
		if !slices.Contains(active, d.RID) {
			return false
		}
	}
	return true
}

// neighbourWanted reports whether a subscriber wanted, within
// dynacastHold, the arrived layer nearest below or above index i (true
// when no layer has arrived). activeMu is held.
func (t *Track) neighbourWanted(i int, now time.Time) bool {
	found := false
	for _, step := range [2]int{-1, 1} {
		for j := i + step; j >= 0 && j < maxLayers; j += step {
			if t.layer(j) == nil {
				continue
			}
			found = true
			if now.Sub(t.wantedAt[j]) < dynacastHold {
				return true
			}
			break
		}
	}
	return !found
}

// pliSender returns a function that sends a PLI for ssrc on pc.
func pliSender(pc *webrtc.PeerConnection, ssrc webrtc.SSRC) func() {
	return func() {
		_ = pc.WriteRTCP([]rtcp.Packet{&rtcp.PictureLossIndication{MediaSSRC: uint32(ssrc)}})
	}
}

// lowest is the index of the lowest layer, or -1.
func (t *Track) lowest() int {
	for i := range maxLayers {
		if t.layers[i].Load() != nil {
			return i
		}
	}
	return -1
}

// hasRID reports whether a layer with this RID has arrived.
func (t *Track) hasRID(rid string) bool {
	for i := range maxLayers {
		if l := t.layer(i); l != nil && l.rid == rid {
			return true
		}
	}
	return false
}
