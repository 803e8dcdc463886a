package rooms

import (
	"fmt"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	"github.com/pion/webrtc/v4"

	"github.com/parley-rtc/parley/internal/queue"
	"github.com/parley-rtc/parley/limit"
	"github.com/parley-rtc/parley/sfu"
)

// TrackDesc is what the client says about a track in its publisher offer.
type TrackDesc struct {
	TrackID string // MediaStreamTrack id (msid)
	Source  string
	Muted   bool
	// Layers are the simulcast encodings, lowest quality first.
	Layers []sfu.LayerDesc
}

type published struct {
	t    *sfu.Track
	info TrackInfo
}

// Participant is one session in a room. Its methods are called by the
// signaling connection that owns it, one at a time.
type Participant struct {
	sid, identity string
	joinedAt      time.Time
	maxTracks     int
	room          *Room
	sink          Sink
	log           *slog.Logger

	pub *sfu.Publisher
	sub *sfu.Subscriber

	mu     sync.Mutex
	name   string                // may be changed by an administrator
	grants Grants                // likewise
	tracks map[string]*published // by sid
	descs  map[string]TrackDesc  // by client track id, from the last offer
	left   atomic.Bool

	// Data channels (data.go). dq and lq are the outgoing queues; the
	// limiters and lossyErrAt belong to the goroutine of their channel.
	dq, lq       *queue.Queue[string]
	dataDone     chan struct{} // closed when p leaves
	dataReady    bool          // guarded by room.dmu: p is in room.ready
	dataOverflow atomic.Bool
	dataLimit    *limit.Window
	lossyLimit   *limit.Window
	lossyErrAt   time.Time
}

func newParticipant(p JoinParams, cfg *Config) *Participant {
	return &Participant{
		sid: newID("PA_"), identity: p.Identity, name: p.Name, grants: p.Grants,
		joinedAt: time.Now(), sink: p.Sink, tracks: map[string]*published{}, descs: map[string]TrackDesc{},
		maxTracks: cfg.MaxTracksPerParticipant,
		dq:        queue.New[string](dataQueueLen), lq: queue.New[string](lossyQueueLen), dataDone: make(chan struct{}),
		dataLimit: limit.NewWindow(cfg.Data.RateLimit, cfg.Data.RateWindow), lossyLimit: limit.NewWindow(cfg.Data.LossyRateLimit, time.Second),
	}
}

// mediaFlags says whether p sends camera and microphone (published and
// unmuted), and lists its screen share tracks.
func (p *Participant) mediaFlags() (camera, mic bool, screens []string) {
	p.mu.Lock()
	defer p.mu.Unlock()
	for sid, pt := range p.tracks {
		if pt.info.Muted {
			continue
		}
		switch pt.info.Source {
		case SourceCamera:
			camera = true
		case SourceMicrophone:
			mic = true
		case SourceScreen:
			screens = append(screens, sid)
		}
	}
	return camera, mic, screens
}

// SID is the server's id of this session.
func (p *Participant) SID() string { return p.sid }

// Room is the name of p's room.
func (p *Participant) Room() string { return p.room.name }

// Identity from the token.
func (p *Participant) Identity() string { return p.identity }

// Grants are what p may do now.
func (p *Participant) Grants() Grants {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.grants
}

// Name is p's display name.
func (p *Participant) Name() string {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.name
}

// Info is a snapshot for the wire.
func (p *Participant) Info() ParticipantInfo {
	p.mu.Lock()
	defer p.mu.Unlock()
	info := ParticipantInfo{SID: p.sid, Identity: p.identity, Name: p.name, JoinedAt: p.joinedAt.UnixMilli(), Tracks: []TrackInfo{}}
	for _, pt := range p.tracks {
		info.Tracks = append(info.Tracks, pt.info)
	}
	return info
}

func (p *Participant) connect(e *sfu.Engine, timeout time.Duration) error {
	var err error
	p.pub, err = e.NewPublisher(sfu.PeerEvents{
		Answer:    func(sdp string) { p.sink.Send(Answer{SDP: sdp}) },
		Candidate: func(c *webrtc.ICECandidateInit) { p.sink.Send(Candidate{Target: TargetPublisher, Candidate: c}) },
		Track:     p.onTrack,
		Failed:    func(err error) { go p.fail("publisher_failed", err) },
	}, p.log.With("pc", "publisher"))
	if err != nil {
		return fmt.Errorf("rooms: publisher connection: %w", err)
	}
	p.sub, err = e.NewSubscriber(sfu.PeerEvents{
		Offer:     func(sdp string, mids map[string]string) { p.sink.Send(Offer{SDP: sdp, Mids: mids}) },
		Candidate: func(c *webrtc.ICECandidateInit) { p.sink.Send(Candidate{Target: TargetSubscriber, Candidate: c}) },
		Failed:    func(err error) { go p.fail("subscriber_failed", err) },
		DataOpen: func(d *sfu.Data) {
			p.attachData(d)
			go func() { // the client closed its channels: stop sending
				select {
				case <-d.Closed():
				case <-p.dataDone:
					return
				}
				r := p.room
				r.dmu.Lock()
				r.detachDataLocked(p)
				r.dmu.Unlock()
			}()
		},
		DataMessage: p.handleData,
	}, timeout, p.log.With("pc", "subscriber"))
	if err != nil {
		_ = p.pub.Close()
		return fmt.Errorf("rooms: subscriber connection: %w", err)
	}
	return nil
}

func (p *Participant) fail(reason string, err error) {
	if p.left.Load() {
		return
	}
	p.log.Warn("participant connection failed", "reason", reason, "err", err)
	p.sink.Send(Closed{Reason: reason, Err: err})
	p.Leave(reason)
}

// onTrack is called by the publisher connection for each new track.
func (p *Participant) onTrack(t *sfu.Track) {
	p.mu.Lock()
	if p.left.Load() || len(p.tracks) >= p.maxTracks {
		p.mu.Unlock()
		t.Close()
		p.log.Warn("track refused", "cid", t.CID(), "limit", p.maxTracks)
		return
	}
	desc, ok := p.descs[t.CID()]
	if !ok {
		desc = TrackDesc{TrackID: t.CID(), Source: SourceMicrophone}
		if t.Kind() == webrtc.RTPCodecTypeVideo {
			desc.Source = SourceCamera
		}
	}
	sid := newID("TR_")
	info := TrackInfo{SID: sid, CID: t.CID(), Kind: t.Kind().String(), Source: desc.Source, Muted: desc.Muted, Codec: t.Codec().MimeType}
	if t.Simulcast() {
		info.Layers = layerInfos(desc.Layers, t.Layers())
		t.OnLayers(func(rids []string) { p.sink.Send(SetLayers{TrackSID: sid, Active: rids}) })
	}
	pt := &published{t: t, info: info}
	t.Start(sid)
	if desc.Muted {
		t.SetMuted(true)
	}
	p.tracks[sid] = pt
	p.mu.Unlock()
	p.log.Info("track published", "track", sid, "kind", info.Kind, "source", info.Source, "codec", info.Codec)
	p.room.publish(p, pt)
	go func() {
		<-t.Done()
		_ = p.Unpublish(sid)
	}()
}

// trackInfo reads a track's info under p's lock (mute changes it).
func (p *Participant) trackInfo(pt *published) TrackInfo {
	p.mu.Lock()
	defer p.mu.Unlock()
	return pt.info
}

func (p *Participant) publishedTracks() []*published {
	p.mu.Lock()
	defer p.mu.Unlock()
	out := make([]*published, 0, len(p.tracks))
	for _, pt := range p.tracks {
		out = append(out, pt)
	}
	return out
}

func (p *Participant) takeTracks() []*published {
	p.mu.Lock()
	defer p.mu.Unlock()
	out := make([]*published, 0, len(p.tracks))
	for sid, pt := range p.tracks {
		out = append(out, pt)
		delete(p.tracks, sid)
	}
	return out
}

// HandleOffer applies a publisher offer. descs describes every track the
// offer sends; tracks published before and missing now are unpublished.
func (p *Participant) HandleOffer(sdp string, descs []TrackDesc) error {
	if !p.Grants().Publish {
		return fmt.Errorf("%w: publish", ErrPermission)
	}
	if len(descs) > p.maxTracks {
		return fmt.Errorf("%w: %d tracks, the limit is %d", ErrTooManyTracks, len(descs), p.maxTracks)
	}
	byCID := make(map[string]TrackDesc, len(descs))
	for _, d := range descs {
		switch d.Source {
		case SourceCamera, SourceMicrophone, SourceScreen, SourceScreenAudio:
		default:
			return fmt.Errorf("%w: track %q has unknown source %q", ErrBadDescription, d.TrackID, d.Source)
		}
		if err := checkLayers(d); err != nil {
			return err
		}
		byCID[d.TrackID] = d
	}
	var gone []string
	p.mu.Lock()
	p.descs = byCID
	for sid, pt := range p.tracks {
		if _, ok := byCID[pt.info.CID]; !ok {
			gone = append(gone, sid)
		}
	}
	p.mu.Unlock()
	for _, sid := range gone {
		_ = p.Unpublish(sid)
	}
	for _, d := range descs {
		p.pub.SetLayers(d.TrackID, d.Layers)
	}
	return p.pub.HandleOffer(sdp)
}

// SetTrackSettings records how p shows one of the tracks it receives.
func (p *Participant) SetTrackSettings(sid string, s sfu.TrackSettings) error {
	switch s.Quality {
	case "", "low", "medium", "high":
	default:
		return fmt.Errorf("%w: track %s: quality %q is not low, medium or high", ErrBadDescription, sid, s.Quality)
	}
	if s.Width < 0 || s.Height < 0 || s.Width > 16384 || s.Height > 16384 {
		return fmt.Errorf("%w: track %s: width and height must be 0-16384 pixels", ErrBadDescription, sid)
	}
	if err := p.sub.SetTrackSettings(sid, s); err != nil {
		return fmt.Errorf("%w: %s is not a track you receive", ErrUnknownTrack, sid)
	}
	return nil
}

// SubscribedLayer is the layer index (0 the lowest) forwarded to p for
// track sid, or -1.
func (p *Participant) SubscribedLayer(sid string) int { return p.sub.Layer(sid) }

// HandleAnswer applies the client's answer to the subscriber offer.
func (p *Participant) HandleAnswer(sdp string) error { return p.sub.HandleAnswer(sdp) }

// AddCandidate adds a remote candidate to the named connection.
func (p *Participant) AddCandidate(target string, c webrtc.ICECandidateInit) error {
	switch target {
	case TargetPublisher:
		return p.pub.AddCandidate(c)
	case TargetSubscriber:
		return p.sub.AddCandidate(c)
	}
	return ErrBadTarget
}

// SetMuted mutes or unmutes one of p's tracks for everybody.
func (p *Participant) SetMuted(sid string, muted bool) error {
	_, err := p.setMuted(sid, muted)
	return err
}

func (p *Participant) setMuted(sid string, muted bool) (TrackInfo, error) {
	p.mu.Lock()
	pt, ok := p.tracks[sid]
	var info TrackInfo
	if ok {
		pt.info.Muted = muted
		pt.t.SetMuted(muted)
		info = pt.info
	}
	p.mu.Unlock()
	if !ok {
		return info, ErrUnknownTrack
	}
	p.room.trackMuted(p, info)
	p.room.presenceMedia(p)
	return info, nil
}

// Unpublish ends one of p's tracks. The room's lock is held from taking
// the track off p until the others are unsubscribed from it: a leave,
// which takes p's tracks under the same lock, either finds it or comes
// after. (Taken off p first and announced after a leave, the track stayed
// subscribed on every other participant's connection for good: a
// publisher whose media stops as it leaves ends its tracks just then.)
func (p *Participant) Unpublish(sid string) error {
	r := p.room
	r.mu.Lock()
	p.mu.Lock()
	pt, ok := p.tracks[sid]
	delete(p.tracks, sid)
	p.mu.Unlock()
	if ok {
		r.unpublishLocked(p, sid)
	}
	r.mu.Unlock()
	if !ok {
		return ErrUnknownTrack
	}
	pt.t.Close()
	p.log.Info("track unpublished", "track", sid)
	return nil
}

// Left reports whether p has left its room.
func (p *Participant) Left() bool { return p.left.Load() }

// RestartICE asks for a subscriber offer with new ICE credentials.
func (p *Participant) RestartICE(target string) error {
	switch target {
	case TargetSubscriber:
		p.sub.RestartICE()
		return nil
	case TargetPublisher:
		return fmt.Errorf("%w: the client restarts the publisher connection itself, with an offer made with iceRestart", ErrBadTarget)
	}
	return ErrBadTarget
}

// SetDetached tells the room that p's signaling connection is gone (and p
// may resume) or back: its presence shows offline meanwhile.
func (p *Participant) SetDetached(detached bool) {
	r := p.room
	if r == nil {
		return
	}
	r.dmu.Lock()
	defer r.dmu.Unlock()
	e, ok := r.presence[p.identity]
	if !ok || e.part != p || e.detached == detached {
		return
	}
	e.detached = detached
	now := time.Now()
	e.lastSeen = now
	r.presenceChangedLocked(e, now)
}

// Leave takes p out of its room and closes its connections. Safe to call
// more than once.
func (p *Participant) Leave(reason string) { p.leave(reason) }

func (p *Participant) leave(reason string) {
	if p.left.Swap(true) {
		return
	}
	r := p.room
	r.mu.Lock()
	r.removeLocked(p, reason)
	r.mu.Unlock()
	close(p.dataDone)
	p.closePeers()
	r.mgr.dropIfEmpty(r)
	p.log.Info("participant left", "reason", reason)
}

func (p *Participant) closePeers() {
	for _, pt := range p.takeTracks() {
		pt.t.Close()
	}
	if p.sub != nil {
		_ = p.sub.Close()
	}
	if p.pub != nil {
		_ = p.pub.Close()
	}
}
