package main

import (
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"net/url"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/gorilla/websocket"
	"github.com/pion/rtp"
	"github.com/pion/webrtc/v4"

	"github.com/parley-rtc/parley/loadtest"
)

// peer is a small pion client of the whole server for the operations
// tests: it joins over the WebSocket, answers subscriber offers, may
// publish one Opus track, and counts the RTP packets it receives.
type peer struct {
	t        *testing.T
	identity string
	ws       *websocket.Conn
	wmu      sync.Mutex
	sub, pub *webrtc.PeerConnection
	received atomic.Int64 // RTP packets received on every track

	mu     sync.Mutex
	msgs   []wsMsg // every signaling message, in order
	closed bool
	dc     *webrtc.DataChannel // the server's reliable data channel
	data   []string            // what arrived on it

	stop chan struct{}
	wg   sync.WaitGroup
}

type wsMsg struct {
	Type string          `json:"type"`
	Data json.RawMessage `json:"data"`
}

// devToken fetches a development-mode join token.
func devToken(t *testing.T, base, room, name string) string {
	t.Helper()
	resp, err := http.Get(base + "/api/dev-token?" + url.Values{"room": {room}, "name": {name}}.Encode())
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var tok struct{ Token string }
	if err := json.NewDecoder(resp.Body).Decode(&tok); err != nil || tok.Token == "" {
		t.Fatalf("dev token: %s %v", resp.Status, err)
	}
	return tok.Token
}

// joinPeer joins room with token and returns once joined. A first message
// other than joined (an error) is kept in msgs and ok is false.
func joinPeer(t *testing.T, httpAddr net.Addr, room, identity, token string) (*peer, bool) {
	t.Helper()
	p, ok, err := dialPeer(httpAddr.String(), room, identity, token)
	if err != nil {
		t.Fatal(err)
	}
	p.t = t
	t.Cleanup(p.close)
	return p, ok
}

// dialPeer is joinPeer for callers that retry: errors are returned.
func dialPeer(addr, room, identity, token string) (*peer, bool, error) {
	ws, _, err := websocket.DefaultDialer.Dial("ws://"+addr+"/rtc", nil)
	if err != nil {
		return nil, false, err
	}
	p := &peer{identity: identity, ws: ws, stop: make(chan struct{})}
	p.send("join", map[string]any{"token": token, "protocol": 1, "room": room})
	_ = ws.SetReadDeadline(time.Now().Add(10 * time.Second))
	var first wsMsg
	if err := ws.ReadJSON(&first); err != nil {
		p.close()
		return nil, false, fmt.Errorf("%s: join: %v", identity, err)
	}
	_ = ws.SetReadDeadline(time.Time{})
	p.msgs = append(p.msgs, first)
	if first.Type != "joined" {
		return p, false, nil
	}
	api, err := loadtest.NewAPI(true)
	if err != nil {
		p.close()
		return nil, false, err
	}
	if p.sub, err = api.NewPeerConnection(webrtc.Configuration{}); err != nil {
		p.close()
		return nil, false, err
	}
	if p.pub, err = api.NewPeerConnection(webrtc.Configuration{}); err != nil {
		p.close()
		return nil, false, err
	}
	for target, pc := range map[string]*webrtc.PeerConnection{"subscriber": p.sub, "publisher": p.pub} {
		pc.OnICECandidate(func(c *webrtc.ICECandidate) {
			if c != nil {
				p.send("candidate", map[string]any{"target": target, "candidate": c.ToJSON()})
			}
		})
	}
	p.sub.OnDataChannel(func(dc *webrtc.DataChannel) {
		if dc.Label() != "parley" {
			return
		}
		p.mu.Lock()
		p.dc = dc
		p.mu.Unlock()
		dc.OnMessage(func(m webrtc.DataChannelMessage) {
			p.mu.Lock()
			p.data = append(p.data, string(m.Data))
			p.mu.Unlock()
		})
	})
	p.sub.OnTrack(func(tr *webrtc.TrackRemote, _ *webrtc.RTPReceiver) {
		buf := make([]byte, 1500)
		for {
			if _, _, err := tr.Read(buf); err != nil {
				return
			}
			p.received.Add(1)
		}
	})
	go p.readLoop()
	return p, true, nil
}

func (p *peer) send(typ string, data any) {
	p.wmu.Lock()
	defer p.wmu.Unlock()
	_ = p.ws.SetWriteDeadline(time.Now().Add(5 * time.Second))
	_ = p.ws.WriteJSON(map[string]any{"type": typ, "data": data})
}

func (p *peer) readLoop() {
	for {
		var m wsMsg
		if err := p.ws.ReadJSON(&m); err != nil {
			p.mu.Lock()
			p.closed = true
			p.mu.Unlock()
			return
		}
		p.mu.Lock()
		p.msgs = append(p.msgs, m)
		p.mu.Unlock()
		switch m.Type {
		case "offer":
			var o struct{ SDP string }
			_ = json.Unmarshal(m.Data, &o)
			if p.sub.SetRemoteDescription(webrtc.SessionDescription{Type: webrtc.SDPTypeOffer, SDP: o.SDP}) != nil {
				continue
			}
			ans, err := p.sub.CreateAnswer(nil)
			if err == nil && p.sub.SetLocalDescription(ans) == nil {
				p.send("answer", map[string]string{"sdp": ans.SDP})
			}
		case "answer":
			var a struct{ SDP string }
			_ = json.Unmarshal(m.Data, &a)
			_ = p.pub.SetRemoteDescription(webrtc.SessionDescription{Type: webrtc.SDPTypeAnswer, SDP: a.SDP})
		case "candidate":
			var c struct {
				Target    string
				Candidate *webrtc.ICECandidateInit
			}
			_ = json.Unmarshal(m.Data, &c)
			if c.Candidate != nil && c.Target == "subscriber" {
				_ = p.sub.AddICECandidate(*c.Candidate)
			} else if c.Candidate != nil && p.pub.RemoteDescription() != nil {
				_ = p.pub.AddICECandidate(*c.Candidate)
			}
		}
	}
}

// publishAudio publishes one Opus track and sends a packet every 20 ms.
func (p *peer) publishAudio() {
	p.t.Helper()
	tr, err := webrtc.NewTrackLocalStaticRTP(webrtc.RTPCodecCapability{MimeType: webrtc.MimeTypeOpus, ClockRate: 48000, Channels: 2}, p.identity+"-mic", p.identity)
	if err != nil {
		p.t.Fatal(err)
	}
	if _, err := p.pub.AddTransceiverFromTrack(tr, webrtc.RTPTransceiverInit{Direction: webrtc.RTPTransceiverDirectionSendonly}); err != nil {
		p.t.Fatal(err)
	}
	offer, err := p.pub.CreateOffer(nil)
	if err == nil {
		err = p.pub.SetLocalDescription(offer)
	}
	if err != nil {
		p.t.Fatal(err)
	}
	p.send("offer", map[string]any{"sdp": offer.SDP, "tracks": []map[string]string{{"track_id": tr.ID(), "source": "microphone"}}})
	p.wg.Add(1)
	go func() {
		defer p.wg.Done()
		tick := time.NewTicker(20 * time.Millisecond)
		defer tick.Stop()
		for seq := uint16(1); ; seq++ {
			select {
			case <-p.stop:
				return
			case <-tick.C:
			}
			pkt := &rtp.Packet{Header: rtp.Header{Version: 2, SequenceNumber: seq, Timestamp: uint32(seq) * 960}, Payload: make([]byte, 80)}
			if tr.WriteRTP(pkt) != nil {
				return
			}
		}
	}()
}

// messages returns the signaling messages of a type received so far.
func (p *peer) messages(typ string) []json.RawMessage {
	p.mu.Lock()
	defer p.mu.Unlock()
	var out []json.RawMessage
	for _, m := range p.msgs {
		if m.Type == typ {
			out = append(out, m.Data)
		}
	}
	return out
}

func (p *peer) isClosed() bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.closed
}

func (p *peer) close() {
	select {
	case <-p.stop:
		return
	default:
		close(p.stop)
	}
	p.wg.Wait()
	_ = p.ws.Close()
	for _, pc := range []*webrtc.PeerConnection{p.pub, p.sub} {
		if pc != nil {
			_ = pc.GracefulClose()
		}
	}
}

// eventually polls cond for up to d.
func eventually(t *testing.T, d time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(d)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %s: %s", d, what)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// hasLeave reports whether p got leave with this reason.
func (p *peer) hasLeave(reason string) bool {
	for _, m := range p.messages("leave") {
		if strings.Contains(string(m), `"`+reason+`"`) {
			return true
		}
	}
	return false
}
