package loadtest

import (
	"context"
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"net/url"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/gorilla/websocket"
	"github.com/pion/ice/v4"
	"github.com/pion/interceptor"
	"github.com/pion/webrtc/v4"
)

// client is one load-test participant speaking the public protocol
// (docs/protocol.md): it joins, answers subscriber offers, publishes what
// it is told and measures what it receives.
type client struct {
	identity string
	sid      string // the server's participant sid
	ws       *websocket.Conn
	wmu      sync.Mutex
	sub, pub *webrtc.PeerConnection
	recv     *receiver
	answered chan struct{} // the publisher connection got its answer

	// The published video (set before the offer) and its sid (from
	// track_published), for dynacast's set_layers.
	vmu         sync.Mutex
	videoCID    string
	videoLayers []*videoLayer
	videoSID    string

	joinTime time.Duration
	done     chan struct{}
}

type envelope struct {
	Type string          `json:"type"`
	Data json.RawMessage `json:"data"`
}

// NewAPI is a pion API like a browser's: default codecs and interceptors
// (NACK, reports, TWCC); with loopback, ICE uses loopback addresses only.
func NewAPI(loopback bool) (*webrtc.API, error) { return newAPI(loopback, true) }

// newAPI without rtx offers VP8 and Opus only, no RTX: the simulcast
// publisher's, whose retransmissions then stay on each layer's own SSRC,
// which the server knows by its RID (pion sends RTX of a simulcast layer
// without the repaired-rid extension).
func newAPI(loopback, rtx bool) (*webrtc.API, error) {
	m := &webrtc.MediaEngine{}
	if rtx {
		if err := m.RegisterDefaultCodecs(); err != nil {
			return nil, err
		}
	} else {
		if err := m.RegisterCodec(webrtc.RTPCodecParameters{
			RTPCodecCapability: webrtc.RTPCodecCapability{MimeType: webrtc.MimeTypeVP8, ClockRate: 90000},
			PayloadType:        96,
		}, webrtc.RTPCodecTypeVideo); err != nil {
			return nil, err
		}
		if err := m.RegisterCodec(webrtc.RTPCodecParameters{
			RTPCodecCapability: webrtc.RTPCodecCapability{MimeType: webrtc.MimeTypeOpus, ClockRate: 48000, Channels: 2, SDPFmtpLine: "minptime=10;useinbandfec=1"},
			PayloadType:        111,
		}, webrtc.RTPCodecTypeAudio); err != nil {
			return nil, err
		}
	}
	reg := &interceptor.Registry{}
	if err := webrtc.RegisterDefaultInterceptors(m, reg); err != nil {
		return nil, err
	}
	se := webrtc.SettingEngine{}
	se.SetIncludeLoopbackCandidate(loopback)
	se.SetNetworkTypes([]webrtc.NetworkType{webrtc.NetworkTypeUDP4, webrtc.NetworkTypeUDP6})
	se.SetICEMulticastDNSMode(ice.MulticastDNSModeDisabled)
	if loopback {
		se.SetIPFilter(func(ip net.IP) bool { return ip.IsLoopback() })
	}
	return webrtc.NewAPI(webrtc.WithMediaEngine(m), webrtc.WithInterceptorRegistry(reg), webrtc.WithSettingEngine(se)), nil
}

// dial joins room with token; it returns once joined. The publisher
// connection is pubAPI's, the subscriber connection subAPI's.
func dial(ctx context.Context, pubAPI, subAPI *webrtc.API, wsURL, room, identity, token string, recv *receiver) (*client, error) {
	start := time.Now()
	d := websocket.Dialer{HandshakeTimeout: 10 * time.Second}
	ws, resp, err := d.DialContext(ctx, wsURL, nil)
	if err != nil {
		if resp != nil && resp.StatusCode == http.StatusTooManyRequests {
			return nil, fmt.Errorf("%s: the server refuses more sockets from this address: raise its signaling.max_connections_per_ip", identity)
		}
		return nil, fmt.Errorf("%s: %w", identity, err)
	}
	c := &client{identity: identity, ws: ws, recv: recv, answered: make(chan struct{}), done: make(chan struct{})}
	c.send("join", map[string]any{"token": token, "protocol": 1, "room": room})
	_ = ws.SetReadDeadline(time.Now().Add(15 * time.Second))
	var first envelope
	if err := ws.ReadJSON(&first); err != nil {
		ws.Close()
		return nil, fmt.Errorf("%s: join: %w", identity, err)
	}
	_ = ws.SetReadDeadline(time.Time{})
	if first.Type != "joined" {
		ws.Close()
		return nil, fmt.Errorf("%s: join refused: %s", identity, first.Data)
	}
	c.joinTime = time.Since(start)
	var joined struct {
		Participant struct{ SID string }
	}
	_ = json.Unmarshal(first.Data, &joined)
	c.sid = joined.Participant.SID
	cfg := webrtc.Configuration{}
	if c.sub, err = subAPI.NewPeerConnection(cfg); err == nil {
		c.pub, err = pubAPI.NewPeerConnection(cfg)
	}
	if err != nil {
		c.close()
		return nil, err
	}
	for target, pc := range map[string]*webrtc.PeerConnection{"subscriber": c.sub, "publisher": c.pub} {
		pc.OnICECandidate(func(ci *webrtc.ICECandidate) {
			if ci != nil {
				c.send("candidate", map[string]any{"target": target, "candidate": ci.ToJSON()})
			}
		})
	}
	c.sub.OnTrack(func(tr *webrtc.TrackRemote, _ *webrtc.RTPReceiver) { go recv.read(tr, identity) })
	go c.readLoop()
	return c, nil
}

func (c *client) send(typ string, data any) {
	c.wmu.Lock()
	defer c.wmu.Unlock()
	_ = c.ws.SetWriteDeadline(time.Now().Add(5 * time.Second))
	_ = c.ws.WriteJSON(map[string]any{"type": typ, "data": data})
}

func (c *client) readLoop() {
	defer close(c.done)
	var pending []webrtc.ICECandidateInit
	for {
		var m envelope
		if err := c.ws.ReadJSON(&m); err != nil {
			return
		}
		switch m.Type {
		case "offer":
			var o struct{ SDP string }
			_ = json.Unmarshal(m.Data, &o)
			if c.sub.SetRemoteDescription(webrtc.SessionDescription{Type: webrtc.SDPTypeOffer, SDP: o.SDP}) != nil {
				continue
			}
			if ans, err := c.sub.CreateAnswer(nil); err == nil && c.sub.SetLocalDescription(ans) == nil {
				c.send("answer", map[string]string{"sdp": ans.SDP})
			}
		case "answer":
			var a struct{ SDP string }
			_ = json.Unmarshal(m.Data, &a)
			if c.pub.SetRemoteDescription(webrtc.SessionDescription{Type: webrtc.SDPTypeAnswer, SDP: a.SDP}) == nil {
				for _, ci := range pending {
					_ = c.pub.AddICECandidate(ci)
				}
				pending = nil
				select {
				case <-c.answered:
				default:
					close(c.answered)
				}
			}
		case "candidate":
			var cm struct {
				Target    string
				Candidate *webrtc.ICECandidateInit
			}
			_ = json.Unmarshal(m.Data, &cm)
			switch {
			case cm.Candidate == nil:
			case cm.Target == "subscriber":
				_ = c.sub.AddICECandidate(*cm.Candidate)
			case c.pub.RemoteDescription() == nil:
				pending = append(pending, *cm.Candidate)
			default:
				_ = c.pub.AddICECandidate(*cm.Candidate)
			}
		case "track_published":
			var tp struct {
				ParticipantSID string `json:"participant_sid"`
				Track          struct{ SID, CID string }
			}
			_ = json.Unmarshal(m.Data, &tp)
			c.vmu.Lock()
			if tp.ParticipantSID == c.sid && tp.Track.CID == c.videoCID && c.videoCID != "" {
				c.videoSID = tp.Track.SID
			}
			c.vmu.Unlock()
		case "set_layers":
			var sl struct {
				TrackSID string `json:"track_sid"`
				Active   []string
			}
			_ = json.Unmarshal(m.Data, &sl)
			c.vmu.Lock()
			if sl.TrackSID == c.videoSID && c.videoSID != "" {
				for _, l := range c.videoLayers {
					l.setActive(slices.Contains(sl.Active, l.rid))
				}
			}
			c.vmu.Unlock()
		case "ping":
			c.send("pong", m.Data)
		case "error", "leave":
			if m.Type == "leave" || strings.Contains(string(m.Data), `"negotiation_timeout"`) {
				return
			}
		}
	}
}

// offer sends the publisher connection's offer, describing its tracks.
func (c *client) offer(descs []map[string]any) error {
	offer, err := c.pub.CreateOffer(nil)
	if err == nil {
		err = c.pub.SetLocalDescription(offer)
	}
	if err != nil {
		return err
	}
	c.send("offer", map[string]any{"sdp": offer.SDP, "tracks": descs})
	return nil
}

// close leaves and closes everything.
func (c *client) close() {
	c.send("leave", map[string]any{})
	_ = c.ws.Close()
	for _, pc := range []*webrtc.PeerConnection{c.pub, c.sub} {
		if pc != nil {
			_ = pc.Close()
		}
	}
}

// wsURL turns the server's http(s) URL into its signaling WebSocket URL.
func wsURL(base string) (string, error) {
	u, err := url.Parse(base)
	if err != nil || u.Host == "" {
		return "", fmt.Errorf("--url %q: want http(s)://host:port", base)
	}
	switch u.Scheme {
	case "http", "ws":
		u.Scheme = "ws"
	case "https", "wss":
		u.Scheme = "wss"
	default:
		return "", fmt.Errorf("--url %q: want http(s)://host:port", base)
	}
	u.Path = "/rtc"
	return u.String(), nil
}
