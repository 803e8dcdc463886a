package sfu

import (
	"fmt"
	"log/slog"
	"net"
	"sync"
	"sync/atomic"
	"time"

	"github.com/pion/sdp/v3"
	"github.com/pion/srtp/v3"
	"github.com/pion/webrtc/v4"
)

// PeerEvents are what a peer connection tells its owner. Every callback must
// return quickly (post to a queue); they are called in the order the client
// must see them: an answer or offer always before its candidates.
type PeerEvents struct {
	// Answer is the publisher connection's SDP answer.
	Answer func(sdp string)
	// Offer is a subscriber connection offer; mids maps mid -> track sid.
	Offer func(sdp string, mids map[string]string)
	// Candidate is a local ICE candidate; nil ends gathering.
	Candidate func(c *webrtc.ICECandidateInit)
	// Track is a new incoming track on the publisher connection.
	Track func(t *Track)
	// Failed reports that the connection failed or negotiation timed out.
	Failed func(err error)
	// DataOpen (subscriber) is called when the reliable data channel has
	// opened, with the participant's end of both channels.
	DataOpen func(d *Data)
	// DataMessage (subscriber) is one message from the client on the
	// reliable or (lossy) the lossy channel. Calls for one channel come
	// from one goroutine, in order.
	DataMessage func(lossy bool, msg []byte)
}

// candidateGate holds local candidates until the description they belong to
// has been handed to the owner, so the client never gets a candidate first.
type candidateGate struct {
	mu   sync.Mutex
	open bool
	held []*webrtc.ICECandidateInit
	emit func(*webrtc.ICECandidateInit)
}

func (g *candidateGate) push(c *webrtc.ICECandidate) {
	var init *webrtc.ICECandidateInit
	if c != nil {
		i := c.ToJSON()
		init = &i
	}
	g.mu.Lock()
	defer g.mu.Unlock()
	if !g.open {
		g.held = append(g.held, init)
		return
	}
	g.emit(init)
}

func (g *candidateGate) release() {
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.open {
		return
	}
	g.open = true
	for _, c := range g.held {
		g.emit(c)
	}
	g.held = nil
}

// remoteCandidates holds candidates that arrive before the remote
// description they belong to (a client may trickle before its offer lands).
type remoteCandidates struct {
	mu   sync.Mutex
	held []webrtc.ICECandidateInit
}

const maxHeldCandidates = 64

func (r *remoteCandidates) add(pc *webrtc.PeerConnection, c webrtc.ICECandidateInit) error {
	r.mu.Lock()
	if pc.RemoteDescription() == nil {
		defer r.mu.Unlock()
		if len(r.held) >= maxHeldCandidates {
			return fmt.Errorf("%w: too many candidates before the session description", ErrBadCandidate)
		}
		r.held = append(r.held, c)
		return nil
	}
	r.mu.Unlock()
	if err := pc.AddICECandidate(c); err != nil {
		return fmt.Errorf("%w: %v", ErrBadCandidate, err)
	}
	return nil
}

// flush applies held candidates; call after SetRemoteDescription.
func (r *remoteCandidates) flush(pc *webrtc.PeerConnection, log *slog.Logger) {
	r.mu.Lock()
	held := r.held
	r.held = nil
	r.mu.Unlock()
	for _, c := range held {
		if err := pc.AddICECandidate(c); err != nil {
			log.Debug("held candidate refused", "err", err)
		}
	}
}

// watchState reports a connection that failed and was not restarted
// (ICE restart) within grace; grace 0 reports at once.
func watchState(pc *webrtc.PeerConnection, log *slog.Logger, failed func(error), grace time.Duration, onState func(webrtc.PeerConnectionState)) {
	var mu sync.Mutex
	var timer *time.Timer
	pc.OnConnectionStateChange(func(s webrtc.PeerConnectionState) {
		log.Debug("peer connection state", "state", s.String())
		if onState != nil {
			onState(s)
		}
		mu.Lock()
		defer mu.Unlock()
		switch s {
		case webrtc.PeerConnectionStateFailed:
			if failed == nil || timer != nil {
				return
			}
			timer = time.AfterFunc(grace, func() {
				if st := pc.ConnectionState(); st != webrtc.PeerConnectionStateConnected && st != webrtc.PeerConnectionStateClosed {
					failed(fmt.Errorf("%w: ICE or DTLS failed and was not restarted within %s", ErrClosed, grace))
				}
			})
		case webrtc.PeerConnectionStateConnected, webrtc.PeerConnectionStateClosed:
			if timer != nil {
				timer.Stop()
				timer = nil
			}
		}
	})
	// Data channels are the server's own (Data); any the client opens is
	// closed.
	pc.OnDataChannel(func(dc *webrtc.DataChannel) {
		log.Info("closing a data channel the client opened", "label", dc.Label())
		_ = dc.Close()
	})
}

// Publisher is the connection on which the client sends its tracks; the
// client offers, the server answers.
type Publisher struct {
	pc   *webrtc.PeerConnection
	ev   PeerEvents
	log  *slog.Logger
	gate candidateGate
	rc   remoteCandidates
	mu   sync.Mutex // serializes negotiation

	tmu    sync.Mutex
	descs  map[string][]LayerDesc // by MediaStreamTrack id
	groups map[string]*Track      // simulcast tracks by id, while they live

	// the direct receive path (recv.go)
	stats     *engineStats
	keys      *dtlsKeys // nil: off
	tap       *rtcpTap
	stepAside atomic.Bool // pion's feedback and reports step aside
	startOnce sync.Once
	lmu       sync.Mutex
	recv      *recvPath // set once the path has the connection
	live      []*Layer  // layers read before it had it
}

// NewPublisher makes the publisher connection of one participant.
func (e *Engine) NewPublisher(ev PeerEvents, log *slog.Logger) (*Publisher, error) {
	p := &Publisher{ev: ev, log: log, descs: map[string][]LayerDesc{}, groups: map[string]*Track{}, stats: &e.stats, tap: e.tap}
	if !e.cfg.PionReceive && e.tap != nil {
		p.keys = &dtlsKeys{}
	}
	pc, err := e.newPublisherConnection(p.keys, &p.stepAside)
	if err != nil {
		return nil, err
	}
	p.pc = pc
	p.gate.emit = ev.Candidate
	pc.OnICECandidate(p.gate.push)
	if p.keys != nil {
		pc.SCTP().Transport().ICETransport().OnSelectedCandidatePairChange(p.recvPairChanged)
	}
	watchState(pc, log, ev.Failed, e.cfg.ICEFailGrace, p.recvState)
	pc.OnTrack(func(remote *webrtc.TrackRemote, recv *webrtc.RTPReceiver) {
		var pli func()
		if remote.Kind() == webrtc.RTPCodecTypeVideo {
			pli = pliSender(pc, remote.SSRC())
		}
		t, _, added := p.trackFor(remote, pli, log)
		if !added {
			return // one more layer of a simulcast track
		}
		if remote.Kind() == webrtc.RTPCodecTypeAudio {
			for _, x := range recv.GetParameters().HeaderExtensions {
				if x.URI == sdp.AudioLevelURI {
					t.levelExt = uint8(x.ID)
				}
			}
		}
		t.stats = &e.stats
		e.stats.addTrack(t)
		if ev.Track != nil {
			ev.Track(t)
		} else {
			t.Close()
		}
	})
	return p, nil
}

// trackFor makes the Track of a new remote stream, or adds the stream as a
// layer of its simulcast track (added false).
func (p *Publisher) trackFor(remote *webrtc.TrackRemote, pli func(), log *slog.Logger) (t *Track, l *Layer, added bool) {
	codec := remote.Codec().RTPCodecCapability
	if remote.RID() == "" {
		t = newTrack(remote.ID(), remote.Kind(), codec, pli, log)
		p.own(t)
		t.layer(0).remote = remote
		return t, t.layer(0), true
	}
	key := remote.StreamID() + "|" + remote.ID()
	p.tmu.Lock()
	if g := p.groups[key]; g != nil {
		p.tmu.Unlock()
		l := g.addLayer(remote.RID(), remote, pli)
		if l == nil {
			log.Warn("simulcast layer refused: more than three", "track", g.SID(), "rid", remote.RID())
		}
		return g, l, false
	}
	t = newTrackGroup(remote.ID(), remote.Kind(), codec, p.descs[remote.ID()], log)
	t.simulcast = true
	p.own(t)
	p.groups[key] = t
	p.tmu.Unlock()
	l = t.addLayer(remote.RID(), remote, pli)
	go func() {
		<-t.Done()
		p.tmu.Lock()
		if p.groups[key] == t {
			delete(p.groups, key)
		}
		p.tmu.Unlock()
	}()
	return t, l, true
}

// own wires a new track to the connection before any of its layers reads:
// its NACKs go out on it, and the direct receive path (recv.go) learns of
// each layer's first packet.
func (p *Publisher) own(t *Track) {
	t.writeRTCP = p.pc.WriteRTCP
	if p.keys != nil {
		t.onFirst = p.layerStarted
	}
}

// SetLayers tells the connection what the simulcast encodings of a track
// (by MediaStreamTrack id) are, lowest quality first. Call before the offer
// that sends them.
func (p *Publisher) SetLayers(trackID string, layers []LayerDesc) {
	p.tmu.Lock()
	defer p.tmu.Unlock()
	if len(layers) == 0 {
		delete(p.descs, trackID)
		return
	}
	p.descs[trackID] = layers
}

// HandleOffer applies the client's offer and emits the answer.
func (p *Publisher) HandleOffer(sdp string) error {
	p.mu.Lock()
	defer p.mu.Unlock()
	if err := p.pc.SetRemoteDescription(webrtc.SessionDescription{Type: webrtc.SDPTypeOffer, SDP: sdp}); err != nil {
		return fmt.Errorf("%w: %v", ErrBadSDP, err)
	}
	p.rc.flush(p.pc, p.log)
	answer, err := p.pc.CreateAnswer(nil)
	if err != nil {
		return fmt.Errorf("%w: %v", ErrBadSDP, err)
	}
	if err := p.pc.SetLocalDescription(answer); err != nil {
		return fmt.Errorf("%w: %v", ErrBadSDP, err)
	}
	p.ev.Answer(p.pc.LocalDescription().SDP)
	p.gate.release()
	return nil
}

// AddCandidate adds a remote ICE candidate.
func (p *Publisher) AddCandidate(c webrtc.ICECandidateInit) error {
	return p.rc.add(p.pc, c)
}

// Close closes the connection; its tracks end.
func (p *Publisher) Close() error { return p.pc.GracefulClose() }

// Subscriber is the connection on which the server sends other
// participants' tracks; the server offers, the client answers. Only one
// offer is outstanding at a time; changes made meanwhile are sent in the next.
type Subscriber struct {
	stats   *engineStats
	bwe     *bwe
	pc      *webrtc.PeerConnection
	ev      PeerEvents
	log     *slog.Logger
	timeout time.Duration
	gate    candidateGate
	rc      remoteCandidates

	opMu      sync.Mutex
	ops       []subOp
	scheduled bool

	mu       sync.Mutex
	closed   bool
	awaiting bool
	pending  bool
	restart  bool // the next offer restarts ICE
	timer    *time.Timer
	downs    map[string]*DownTrack
	senders  map[string]*webrtc.RTPSender

	ready     atomic.Bool // the connection is up: SRTP can be written
	keys      *dtlsKeys   // nil: direct path off
	direct    atomic.Pointer[directPath]
	conn      net.PacketConn // the engine's media socket, as Parley writes it (ownWriter)
	tap       *rtcpTap       // where the direct path's RTCP is read
	ssrcs     atomic.Pointer[ssrcIndex]
	ssrcGen   atomic.Uint64 // bumped when DownTracks come, go or bind
	done      chan struct{} // closed by Close
	kick      chan struct{} // re-choose layers now
	lastAlloc atomic.Pointer[allocation]
	prober    prober // allocLoop only
}

// NewSubscriber makes the subscriber connection of one participant. An offer
// not answered within timeout fails the connection (ev.Failed).
func (e *Engine) NewSubscriber(ev PeerEvents, timeout time.Duration, log *slog.Logger) (*Subscriber, error) {
	b, err := newBWE()
	if err != nil {
		return nil, err
	}
	var keys *dtlsKeys
	if !e.cfg.PionSend {
		keys = &dtlsKeys{}
	}
	pc, err := e.newSubscriberConnection(b, keys)
	if err != nil {
		return nil, err
	}
	s := &Subscriber{pc: pc, ev: ev, log: log, timeout: timeout, stats: &e.stats, bwe: b,
		downs: map[string]*DownTrack{}, senders: map[string]*webrtc.RTPSender{},
		done: make(chan struct{}), kick: make(chan struct{}, 1), keys: keys, conn: e.wconn, tap: e.tap}
	s.gate.emit = ev.Candidate
	pc.OnICECandidate(s.gate.push)
	pc.SCTP().Transport().ICETransport().OnSelectedCandidatePairChange(s.pairChanged)
	watchState(pc, log, ev.Failed, e.cfg.ICEFailGrace, func(st webrtc.PeerConnectionState) {
		switch {
		case st == webrtc.PeerConnectionStateConnected && !s.ready.Load():
			s.startDirect()
		case st == webrtc.PeerConnectionStateFailed || st == webrtc.PeerConnectionStateClosed:
			// As pion's path does once ICE gave up: nothing more is
			// sent, until an ICE restart selects a pair again.
			if p := s.direct.Load(); p != nil {
				s.tap.remove(p.addr.Swap(nil), p)
			}
		}
		if st == webrtc.PeerConnectionStateConnected && !s.ready.Swap(true) {
			// What was written before SRTP was up went nowhere: every
			// video starts again from a keyframe.
			s.mu.Lock()
			for _, d := range s.downs {
				d.restart()
			}
			s.mu.Unlock()
		}
	})
	if ev.DataOpen != nil || ev.DataMessage != nil {
		// The channels go in the first offer (see Negotiate), so that
		// presence and chat work before anybody publishes.
		if _, err := newData(pc, ev); err != nil {
			_ = pc.Close()
			return nil, err
		}
	}
	go s.allocLoop()
	return s, nil
}

// startDirect gives the connection the direct send path (direct.go) when
// its keys are known and its ICE pair is on the media socket. It runs once,
// before the DownTracks may write.
func (s *Subscriber) startDirect() {
	if s.keys == nil {
		s.stats.pionConns.Add(1)
		return
	}
	local, remote, profile, addr, err := directStart(s.keys, s.pc)
	if err != nil {
		s.stats.pionConns.Add(1)
		s.log.Debug("subscriber sends through pion", "why", err)
		return
	}
	s.stats.directConns.Add(1)
	p := &directPath{conn: s.conn, cc: s.bwe.cc, key: local.key, salt: local.salt, profile: profile}
	if s.tap != nil {
		if ctx, err := srtp.CreateContext(remote.key, remote.salt, profile, srtp.SRTCPReplayProtection(srtcpReplayWindow)); err == nil {
			p.rtcp = &rtcpReader{ctx: ctx, handle: s.handleRTCP}
		}
	}
	p.addr.Store(addr)
	s.direct.Store(p)
	if p.rtcp != nil {
		s.tap.add(addr, p)
	}
	s.log.Debug("subscriber sends directly", "to", addr.String(), "profile", profile)
}

// pairChanged follows ICE to a new pair. A connection on the direct path
// cannot hand its streams to pion's SRTP context mid-call (their rollover
// counters live in Parley's), so a move to a pair the path cannot write to
// (ICE-TCP) fails the connection and the client joins again (protocol:
// subscriber_failed).
func (s *Subscriber) pairChanged(pair *webrtc.ICECandidatePair) {
	p := s.direct.Load()
	if p == nil {
		return
	}
	addr := pairAddr(pair)
	if old := p.addr.Swap(addr); old == nil || addr == nil || old.String() != addr.String() {
		s.tap.remove(old, p)
		if p.rtcp != nil {
			s.tap.add(addr, p)
		}
	}
	if addr == nil && s.ev.Failed != nil {
		go s.ev.Failed(fmt.Errorf("%w: the subscriber connection moved to a network path its media cannot follow (%v); join again", ErrClosed, pair))
	}
}

// SetTrackSettings records how the client shows one of its tracks (size,
// quality, paused); the layers are re-chosen at once.
func (s *Subscriber) SetTrackSettings(sid string, ts TrackSettings) error {
	s.mu.Lock()
	d, ok := s.downs[sid]
	s.mu.Unlock()
	if !ok {
		return fmt.Errorf("%w: %s", ErrUnknownTrack, sid)
	}
	d.settings.Store(&ts)
	s.reallocateSoon()
	return nil
}

// Layer is the index of the layer forwarded for track sid (0 is the
// lowest), or -1.
func (s *Subscriber) Layer(sid string) int {
	s.mu.Lock()
	d, ok := s.downs[sid]
	s.mu.Unlock()
	if !ok {
		return -1
	}
	return d.Layer()
}

// Estimate is the connection's bandwidth estimate in bits/s.
func (s *Subscriber) Estimate() int64 {
	if a := s.lastAlloc.Load(); a != nil {
		return a.estimate
	}
	return initialEstimate
}

func (s *Subscriber) reallocateSoon() {
	select {
	case s.kick <- struct{}{}:
	default:
	}
}

// Negotiate sends an offer even if no track changed (e.g. the first one,
// for the data channels), batched with any pending changes.
func (s *Subscriber) Negotiate() { s.queueOp(subOp{negotiate: true}) }

// RestartICE sends an offer with new ICE credentials (the client asks for
// it when its subscriber connection failed or its network changed).
func (s *Subscriber) RestartICE() { s.queueOp(subOp{negotiate: true, iceRestart: true}) }

// negotiationDelay batches subscription changes that come together (a
// participant joining a full room) into one offer.
const negotiationDelay = 15 * time.Millisecond

type subOp struct {
	add        *Track
	streamID   string
	remove     string
	negotiate  bool // offer even if no track changed
	iceRestart bool // with new ICE credentials
}

// AddTrack subscribes to t; streamID groups tracks that play together. It
// never waits for negotiation: the change is queued and applied, with any
// others, by the subscriber's own negotiation.
func (s *Subscriber) AddTrack(t *Track, streamID string) {
	s.queueOp(subOp{add: t, streamID: streamID})
}

// RemoveTrack unsubscribes from the track with this sid.
func (s *Subscriber) RemoveTrack(sid string) {
	s.queueOp(subOp{remove: sid})
}

func (s *Subscriber) queueOp(op subOp) {
	s.opMu.Lock()
	defer s.opMu.Unlock()
	s.ops = append(s.ops, op)
	if !s.scheduled {
		s.scheduled = true
		time.AfterFunc(negotiationDelay, s.applyOps)
	}
}

func (s *Subscriber) applyOps() {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.opMu.Lock()
	ops := s.ops
	s.ops = nil
	s.scheduled = false
	s.opMu.Unlock()
	if s.closed {
		return
	}
	changed := false
	for _, op := range ops {
		if op.negotiate {
			changed = true
			s.restart = s.restart || op.iceRestart
			continue
		}
		if op.add != nil {
			changed = s.addLocked(op.add, op.streamID) || changed
		} else {
			changed = s.removeLocked(op.remove) || changed
		}
	}
	if changed {
		s.negotiateLocked()
	}
}

func (s *Subscriber) addLocked(t *Track, streamID string) bool {
	if _, ok := s.downs[t.SID()]; ok {
		return false
	}
	select {
	case <-t.Done():
		return false
	default:
	}
	d := NewDownTrack(t, streamID)
	d.ready = &s.ready
	d.path = &s.direct
	d.onREMB = s.bwe.setREMB
	tr, err := s.pc.AddTransceiverFromTrack(d, webrtc.RTPTransceiverInit{Direction: webrtc.RTPTransceiverDirectionSendonly})
	if err != nil {
		s.log.Warn("subscribe failed", "track", t.SID(), "err", err)
		return false
	}
	s.downs[t.SID()] = d
	s.senders[t.SID()] = tr.Sender()
	s.stats.addDown(d)
	d.Run(tr.Sender())
	s.reallocateSoon()
	return true
}

func (s *Subscriber) removeLocked(sid string) bool {
	d, ok := s.downs[sid]
	if !ok {
		return false
	}
	d.Close()
	s.stats.endDown(d)
	delete(s.downs, sid)
	s.ssrcGen.Add(1)
	if sender := s.senders[sid]; sender != nil {
		_ = s.pc.RemoveTrack(sender)
	}
	delete(s.senders, sid)
	return true
}

func (s *Subscriber) negotiateLocked() {
	if s.closed {
		return
	}
	if s.awaiting {
		s.pending = true
		return
	}
	s.pending = false
	var opts *webrtc.OfferOptions
	if s.restart {
		opts = &webrtc.OfferOptions{ICERestart: true}
		s.restart = false
	}
	offer, err := s.pc.CreateOffer(opts)
	if err == nil {
		err = s.pc.SetLocalDescription(offer)
	}
	if err != nil {
		s.log.Warn("subscriber offer failed", "err", err)
		if s.ev.Failed != nil {
			go s.ev.Failed(fmt.Errorf("sfu: subscriber offer: %w", err))
		}
		return
	}
	mids := map[string]string{}
	for _, tr := range s.pc.GetTransceivers() {
		if tr.Sender() == nil || tr.Mid() == "" {
			continue
		}
		if d, ok := tr.Sender().Track().(*DownTrack); ok && d != nil {
			mids[tr.Mid()] = d.ID()
		}
	}
	s.awaiting = true
	s.log.Debug("subscriber offer", "mids", len(mids))
	if s.timeout > 0 {
		s.timer = time.AfterFunc(s.timeout, s.answerTimedOut)
	}
	s.ev.Offer(s.pc.LocalDescription().SDP, mids)
	s.gate.release()
}

func (s *Subscriber) answerTimedOut() {
	s.mu.Lock()
	timedOut := s.awaiting && !s.closed
	s.mu.Unlock()
	if timedOut && s.ev.Failed != nil {
		s.ev.Failed(fmt.Errorf("%w (%s)", ErrNegotiationTimeout, s.timeout))
	}
}

// HandleAnswer applies the client's answer to the last offer.
func (s *Subscriber) HandleAnswer(sdp string) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return ErrClosed
	}
	if !s.awaiting {
		return ErrNotNegotiated
	}
	if err := s.pc.SetRemoteDescription(webrtc.SessionDescription{Type: webrtc.SDPTypeAnswer, SDP: sdp}); err != nil {
		return fmt.Errorf("%w: %v", ErrBadSDP, err)
	}
	s.awaiting = false
	s.ssrcGen.Add(1) // new transceivers are bound now
	s.rc.flush(s.pc, s.log)
	if s.timer != nil {
		s.timer.Stop()
	}
	if s.pending {
		s.negotiateLocked()
	}
	return nil
}

// AddCandidate adds a remote ICE candidate.
func (s *Subscriber) AddCandidate(c webrtc.ICECandidateInit) error {
	return s.rc.add(s.pc, c)
}

// Close stops every DownTrack and closes the connection.
func (s *Subscriber) Close() error {
	s.mu.Lock()
	if !s.closed {
		close(s.done)
	}
	s.closed = true
	if s.timer != nil {
		s.timer.Stop()
	}
	for sid, d := range s.downs {
		d.Close()
		s.stats.endDown(d)
		delete(s.downs, sid)
	}
	s.mu.Unlock()
	if p := s.direct.Load(); p != nil {
		s.tap.remove(p.addr.Load(), p)
	}
	return s.pc.GracefulClose()
}
