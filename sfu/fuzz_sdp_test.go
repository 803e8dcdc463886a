package sfu

import (
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"regexp"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/pion/ice/v4"
	"github.com/pion/webrtc/v4"
)

// clientAPI is a browser stand-in on loopback, for making seed SDPs.
func clientAPI(t testing.TB) *webrtc.API {
	m := &webrtc.MediaEngine{}
	if err := m.RegisterDefaultCodecs(); err != nil {
		t.Fatal(err)
	}
	se := webrtc.SettingEngine{}
	se.SetIncludeLoopbackCandidate(true)
	se.SetNetworkTypes([]webrtc.NetworkType{webrtc.NetworkTypeUDP4})
	se.SetIPFilter(func(ip net.IP) bool { return ip.IsLoopback() })
	se.SetICEMulticastDNSMode(ice.MulticastDNSModeDisabled)
	return webrtc.NewAPI(webrtc.WithMediaEngine(m), webrtc.WithSettingEngine(se))
}

// seedOffer is what a browser publishing a microphone and a camera
// offers, candidates included.
func seedOffer(t testing.TB) string {
	pc, err := clientAPI(t).NewPeerConnection(webrtc.Configuration{})
	if err != nil {
		t.Fatal(err)
	}
	defer pc.Close()
	for _, c := range []webrtc.RTPCodecCapability{
		{MimeType: webrtc.MimeTypeOpus, ClockRate: 48000, Channels: 2},
		{MimeType: webrtc.MimeTypeVP8, ClockRate: 90000},
	} {
		tr, err := webrtc.NewTrackLocalStaticRTP(c, "track-"+c.MimeType, "stream")
		if err != nil {
			t.Fatal(err)
		}
		if _, err := pc.AddTransceiverFromTrack(tr, webrtc.RTPTransceiverInit{Direction: webrtc.RTPTransceiverDirectionSendonly}); err != nil {
			t.Fatal(err)
		}
	}
	offer, err := pc.CreateOffer(nil)
	if err != nil {
		t.Fatal(err)
	}
	gathered := webrtc.GatheringCompletePromise(pc)
	if err := pc.SetLocalDescription(offer); err != nil {
		t.Fatal(err)
	}
	select {
	case <-gathered:
	case <-time.After(5 * time.Second):
	}
	return pc.LocalDescription().SDP
}

// fuzzSubscriber makes a subscriber forwarding an audio and a video track
// (and the data channels) and returns it with its first offer.
func fuzzSubscriber(t testing.TB, e *Engine, log *slog.Logger) (*Subscriber, string) {
	offers := make(chan string, 4)
	s, err := e.NewSubscriber(PeerEvents{
		Offer:     func(sdp string, _ map[string]string) { offers <- sdp },
		Candidate: func(*webrtc.ICECandidateInit) {},
		DataOpen:  func(*Data) {},
	}, time.Minute, log)
	if err != nil {
		t.Fatal(err)
	}
	audio := newTrack("a", webrtc.RTPCodecTypeAudio, webrtc.RTPCodecCapability{MimeType: webrtc.MimeTypeOpus, ClockRate: 48000, Channels: 2}, func() {}, log)
	audio.sid = "TR_audio"
	video := newTrack("v", webrtc.RTPCodecTypeVideo, vp8, func() {}, log)
	video.sid = "TR_video"
	s.AddTrack(audio, "PA_x|camera")
	s.AddTrack(video, "PA_x|camera")
	s.applyOps() // now, rather than after negotiationDelay: the fuzzer wants speed
	select {
	case sdp := <-offers:
		return s, sdp
	case <-time.After(10 * time.Second):
		_ = s.Close()
		t.Fatal("no subscriber offer")
	}
	return nil, ""
}

// seedAnswer is a browser's answer to a subscriber offer.
func seedAnswer(t testing.TB, offer string) string {
	pc, err := clientAPI(t).NewPeerConnection(webrtc.Configuration{})
	if err != nil {
		t.Fatal(err)
	}
	defer pc.Close()
	if err := pc.SetRemoteDescription(webrtc.SessionDescription{Type: webrtc.SDPTypeOffer, SDP: offer}); err != nil {
		t.Fatal(err)
	}
	ans, err := pc.CreateAnswer(nil)
	if err != nil {
		t.Fatal(err)
	}
	return ans.SDP
}

// normalizeSDP replaces what pion draws at random (session id, ICE
// credentials, fingerprint, SSRCs, CNAMEs, candidates) with fixed values,
// so that every fuzzing process builds the same bases and an input means
// the same SDP everywhere.
func normalizeSDP(sdp string) string {
	fixed := []struct{ re, to string }{
		{`o=- \d+ \d+ `, "o=- 4611 2 "},
		{`a=ice-ufrag:\S+`, "a=ice-ufrag:fuzzufrag"},
		{`a=ice-pwd:\S+`, "a=ice-pwd:fuzzpasswordfuzzpassword"},
		{`a=fingerprint:\S+ \S+`, "a=fingerprint:sha-256 " + strings.TrimSuffix(strings.Repeat("AB:", 32), ":")},
		{`cname:\S+`, "cname:fuzz"},
		{`a=candidate:[^\r]*\r\n`, ""},
		{`a=end-of-candidates\r\n`, ""},
	}
	for _, x := range fixed {
		sdp = regexp.MustCompile(x.re).ReplaceAllString(sdp, x.to)
	}
	ssrcs := map[string]string{}
	ssrc := func(n string) string {
		if _, ok := ssrcs[n]; !ok {
			ssrcs[n] = fmt.Sprint(1000 + len(ssrcs))
		}
		return ssrcs[n]
	}
	number := regexp.MustCompile(`\b\d{3,}\b`)
	sdp = regexp.MustCompile(`a=ssrc(-group)?:[^\r]*`).ReplaceAllStringFunc(sdp, func(l string) string {
		if strings.HasPrefix(l, "a=ssrc:") { // a=ssrc:<ssrc> <attribute>
			n, rest, _ := strings.Cut(strings.TrimPrefix(l, "a=ssrc:"), " ")
			return "a=ssrc:" + ssrc(n) + " " + rest
		}
		return number.ReplaceAllStringFunc(l, ssrc)
	})
	// pion orders an answer's codecs differently from run to run: sort
	// each media section's payload types and attribute lines.
	sections := strings.SplitAfter(sdp, "\r\n")
	var out, media []string
	flush := func() {
		if len(media) == 0 {
			return
		}
		m := strings.Fields(strings.TrimSuffix(media[0], "\r\n"))
		if len(m) > 3 {
			slices.SortFunc(m[3:], func(a, b string) int { x, _ := strconv.Atoi(a); y, _ := strconv.Atoi(b); return x - y })
		}
		attrs := media[1:]
		slices.Sort(attrs)
		out = append(out, strings.Join(m, " ")+"\r\n")
		out = append(out, attrs...)
		media = nil
	}
	for _, l := range sections {
		switch {
		case l == "":
		case strings.HasPrefix(l, "m="):
			flush()
			media = []string{l}
		case media != nil:
			media = append(media, l)
		default:
			out = append(out, l)
		}
	}
	flush()
	sdp = strings.Join(out, "")
	// One fixed loopback candidate per media section.
	return strings.ReplaceAll(sdp, "a=mid:", "a=candidate:1 1 udp 2130706431 127.0.0.1 50000 typ host\r\na=mid:")
}

// sdpBases builds, with pion, a browser-like publisher offer (microphone
// and camera) and a browser's answer to a subscriber offer (audio, video
// and the data channels), both normalized.
func sdpBases(t testing.TB, e *Engine, log *slog.Logger) []string {
	sub, offer := fuzzSubscriber(t, e, log)
	defer sub.Close()
	return []string{normalizeSDP(seedOffer(t)), normalizeSDP(seedAnswer(t, offer))}
}

// buildSDP makes the SDP of one fuzz input. base picks one of bases, in
// which text replaces line at (text may hold any number of lines, or
// none), or is inserted before it when at has its top bit set. A base
// past the end of bases means text is the whole SDP: arbitrary SDP text.
func buildSDP(bases []string, base uint8, at uint16, text string) string {
	if int(base) >= len(bases) {
		return text
	}
	lines := strings.SplitAfter(bases[base], "\r\n")
	i := int(at&0x7fff) % len(lines)
	rest := lines[i+1:]
	if at&0x8000 != 0 {
		rest = lines[i:]
	}
	return strings.Join(lines[:i], "") + text + strings.Join(rest, "")
}

type sdpSeed struct {
	base uint8
	at   uint16
	text string
}

// sdpSeeds are inputs of buildSDP: each base unchanged and damaged in
// the places that matter, and whole SDPs.
func sdpSeeds(bases []string) []sdpSeed {
	var seeds []sdpSeed
	for b, sdp := range bases {
		lines := strings.SplitAfter(sdp, "\r\n")
		seeds = append(seeds, sdpSeed{uint8(b), uint16(0), lines[0]}) // unchanged
		edits := map[string][]string{
			"v=":             {"v=1\r\n", "v=0\r\nv=0\r\n"},
			"o=":             {"o=- 99999999999999999999999 x IN IP4 0.0.0.0\r\n"},
			"a=group:BUNDLE": {"", "a=group:BUNDLE 0 0 7\r\n", "a=group:LS x\r\n"},
			"m=audio":        {"", "m=audio 99999999999 UDP/TLS/RTP/SAVPF 111\r\n", "m=audio 9 RTP/AVP\r\n", "m=audio -1 UDP/TLS/RTP/SAVPF 300\r\n"},
			"m=video":        {"", "m=video 9 UDP/TLS/RTP/SAVPF 96 96 96\r\n", "m=video 0 UDP/TLS/RTP/SAVPF 96\r\n"},
			"m=application":  {"", "m=application 9 UDP/DTLS/SCTP webrtc-datachannel\r\na=sctp-port:70000\r\na=max-message-size:-1\r\n"},
			"c=":             {"c=IN IP6 ::1\r\n", "c=IN IP4 999.1.1.1\r\n"},
			"a=fingerprint":  {"", "a=fingerprint:md5 00\r\n", "a=fingerprint:sha-256\r\n"},
			"a=ice-ufrag":    {"", "a=ice-ufrag:\r\n"},
			"a=ice-pwd":      {"", "a=ice-pwd:short\r\n"},
			"a=setup":        {"a=setup:passive\r\n", "a=setup:holdconn\r\n", "a=setup:bogus\r\n"},
			"a=mid":          {"", "a=mid:1\r\n", "a=mid:\r\n", "a=mid:" + strings.Repeat("m", 300) + "\r\n"},
			"a=sendonly":     {"a=sendrecv\r\n", "a=recvonly\r\n", "a=inactive\r\n"},
			"a=recvonly":     {"a=sendrecv\r\n", "a=sendonly\r\n"},
			"a=rtpmap":       {"", "a=rtpmap:111 opus/0/0\r\n", "a=rtpmap:96 VP8/4294967296\r\n", "a=rtpmap:300 H264/90000\r\n"},
			"a=fmtp":         {"a=fmtp:111 minptime=-1;useinbandfec=x\r\n", "a=fmtp:96 profile-level-id=zz\r\n"},
			"a=msid":         {"", "a=msid:\r\n", "a=msid:a b c d\r\n"},
			"a=candidate":    {"", "a=candidate:1 1 udp 2130706431 127.0.0.1 65536 typ host\r\n", "a=candidate:x\r\n", "a=candidate:1 1 tcp 1 127.0.0.1 9 typ host tcptype passive\r\n"},
			"a=ssrc":         {"a=ssrc:4294967295 cname:x\r\na=ssrc-group:FID 1 2 3\r\n", "a=ssrc:-1\r\n"},
		}
		for i, l := range lines {
			for prefix, subs := range edits {
				if strings.HasPrefix(l, prefix) {
					for _, s := range subs {
						seeds = append(seeds, sdpSeed{uint8(b), uint16(i), s})
					}
					delete(edits, prefix) // first occurrence only
				}
			}
		}
		for _, extra := range []string{
			"a=rid:h send\r\na=rid:m send\r\na=simulcast:send h;m\r\n",
			"a=extmap:300 urn:ietf:params:rtp-hdrext:sdes:mid\r\na=extmap:0 x\r\n",
			"a=rtcp-fb:* nack\r\na=rtcp-fb:96 ccm fir pli\r\n",
			strings.Repeat("m=audio 9 UDP/TLS/RTP/SAVPF 111\r\n", 50),
		} {
			seeds = append(seeds, sdpSeed{uint8(b), uint16(0x8000 | (len(lines) - 1)), extra})
		}
		seeds = append(seeds, sdpSeed{uint8(255), uint16(0), sdp}, sdpSeed{uint8(255), uint16(0), strings.ReplaceAll(sdp, "\r\n", "\n")})
	}
	return append(seeds, sdpSeed{uint8(255), uint16(0), "v=0\r\n"}, sdpSeed{uint8(255), uint16(0), ""})
}

// FuzzSDP feeds SDP to a publisher's HandleOffer and to a subscriber's
// HandleAnswer (with an offer outstanding) of a real engine on 127.0.0.1:
// neither may panic or hang, and each either applies it or fails with an
// error that wraps ErrBadSDP (the signaling layer's bad_sdp). Inputs edit
// one line of a real offer or answer, or are the whole SDP text: each
// call negotiates for real (milliseconds), and small inputs keep the
// fuzzer's minimizing of new inputs short.
func FuzzSDP(f *testing.F) {
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	e, err := NewEngine(Config{ListenIP: "127.0.0.1", IncludeLoopback: true}, log)
	if err != nil {
		f.Fatal(err)
	}
	f.Cleanup(func() { _ = e.Close() })
	bases := sdpBases(f, e, log)
	for _, s := range sdpSeeds(bases) {
		f.Add(s.base, s.at, s.text)
	}

	// A publisher or subscriber whose description was refused before any
	// of it was applied (no remote description, signaling state as before)
	// is as good as a new one, and is reused: making one costs far more
	// than parsing most inputs.
	var pub *Publisher
	var sub *Subscriber
	f.Fuzz(func(t *testing.T, base uint8, at uint16, text string) {
		sdp := buildSDP(bases, base, at, text)
		if len(sdp) > 64<<10 { // a signaling message is at most 64 KiB
			return
		}
		// A hang is a failure too: the fuzzer would only stall on it.
		done := make(chan struct{})
		defer close(done)
		go func() {
			select {
			case <-done:
			case <-time.After(20 * time.Second):
				buf := make([]byte, 1<<20)
				panic(fmt.Sprintf("the SDP was not handled within 20s:\n%s", buf[:runtime.Stack(buf, true)]))
			}
		}()

		if pub == nil {
			var err error
			if pub, err = e.NewPublisher(PeerEvents{Answer: func(string) {}, Candidate: func(*webrtc.ICECandidateInit) {}}, log); err != nil {
				t.Fatal(err)
			}
		}
		err := pub.HandleOffer(sdp)
		if err != nil && !errors.Is(err, ErrBadSDP) {
			t.Fatalf("HandleOffer: %v, want nil or an error wrapping ErrBadSDP", err)
		}
		if err == nil || pub.pc.RemoteDescription() != nil || pub.pc.SignalingState() != webrtc.SignalingStateStable {
			_ = pub.Close()
			pub = nil
		}

		if sub == nil {
			sub, _ = fuzzSubscriber(t, e, log)
		}
		err = sub.HandleAnswer(sdp)
		if err != nil && !errors.Is(err, ErrBadSDP) {
			t.Fatalf("HandleAnswer: %v, want nil or an error wrapping ErrBadSDP", err)
		}
		if err == nil || sub.pc.RemoteDescription() != nil || sub.pc.SignalingState() != webrtc.SignalingStateHaveLocalOffer {
			_ = sub.Close()
			sub = nil
		}
	})
}

// TestSDPSeedsApply: the bases of FuzzSDP are the same in every process
// and are accepted, so the fuzzer starts from descriptions that reach past
// the parser.
func TestSDPSeedsApply(t *testing.T) {
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	e, err := NewEngine(Config{ListenIP: "127.0.0.1", IncludeLoopback: true}, log)
	if err != nil {
		t.Fatal(err)
	}
	defer e.Close()
	bases := sdpBases(t, e, log)
	if again := sdpBases(t, e, log); !slices.Equal(bases, again) {
		t.Fatalf("the bases differ between two builds:\n%s\n%s", strings.Join(bases, "\n"), strings.Join(again, "\n"))
	}
	answers := 0
	pub, err := e.NewPublisher(PeerEvents{Answer: func(string) { answers++ }, Candidate: func(*webrtc.ICECandidateInit) {}}, log)
	if err != nil {
		t.Fatal(err)
	}
	if err := pub.HandleOffer(buildSDP(bases, 0, 0, strings.SplitAfter(bases[0], "\r\n")[0])); err != nil || answers != 1 {
		t.Errorf("base offer: %v (%d answers)", err, answers)
	}
	_ = pub.Close()
	sub, _ := fuzzSubscriber(t, e, log)
	if err := sub.HandleAnswer(buildSDP(bases, 255, 0, bases[1])); err != nil {
		t.Errorf("base answer: %v", err)
	}
	_ = sub.Close()
}
