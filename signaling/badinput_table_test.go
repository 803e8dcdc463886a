package signaling

import (
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/gorilla/websocket"
	"github.com/pion/webrtc/v4"

	"github.com/parley-rtc/parley/rooms"
)

// The table below sends every client message type of docs/protocol.md
// with missing data, data of the wrong JSON type, each field of the wrong
// type, huge and out-of-range values, null and unknown fields, and checks
// what the protocol says: after join, an error (bad_request, or the
// documented code of what the request does, e.g. bad_sdp) and the socket
// stays usable; before join, the documented closing code. badinput_test.go
// covers the single cases it had before (tokens, protocol, room full,
// negotiation timeout, permission, oversized offer).

// want is what the server must do with one bad message.
type want struct {
	codes  []string // error codes it may answer with
	must   bool     // an error must come (otherwise it may also say nothing)
	close  int      // it closes the socket with this code; 0: it stays open
	joined bool     // (first message) the message joins after all
	pongOK bool     // (ping) a pong may answer it instead of an error
	offer  bool     // a subscriber offer must follow (ice_restart)
}

type badCase struct {
	name   string
	first  bool   // sent as the first message, before any join
	typ    string // the message type, as errors name it in request ("" when none)
	frame  []byte // the whole WebSocket message
	binary bool
	// build, when set, makes the frame from the server's first subscriber
	// offer (answers to it).
	build func(t *testing.T, offer string) []byte
	// answerFirst answers the server's first subscriber offer before the
	// frame is sent (a new offer waits for that answer).
	answerFirst bool
	want        want
}

// field is one field of a payload and the JSON type it has.
type field struct {
	path string // dotted, array indices as numbers: tracks.0.source
	kind string // string, int, uint16, bool, array, object
}

// variant is one value put in place of a field (or of the whole data).
type variant struct {
	name  string
	value string // raw JSON
	bad   bool   // does not decode into the field's Go type
}

var huge = `"` + strings.Repeat("x", 60<<10) + `"`

func variants(kind string) []variant {
	common := []variant{{"null", `null`, false}}
	switch kind {
	case "string":
		return append(common, variant{"number", `1`, true}, variant{"bool", `true`, true}, variant{"array", `[]`, true},
			variant{"object", `{}`, true}, variant{"1e309", `1e309`, true}, variant{"empty", `""`, false}, variant{"60KB", huge, false})
	case "int":
		return append(common, variant{"string", `"1"`, true}, variant{"bool", `true`, true}, variant{"array", `[1]`, true},
			variant{"object", `{}`, true}, variant{"fraction", `1.5`, true}, variant{"1e309", `1e309`, true},
			variant{"2^63", `9223372036854775808`, true}, variant{"-1", `-1`, false}, variant{"maxint64", `9223372036854775807`, false})
	case "uint16":
		return append(common, variant{"string", `"0"`, true}, variant{"-1", `-1`, true}, variant{"70000", `70000`, true},
			variant{"1e309", `1e309`, true}, variant{"fraction", `0.5`, true})
	case "bool":
		return append(common, variant{"string", `"true"`, true}, variant{"number", `1`, true}, variant{"array", `[]`, true},
			variant{"object", `{}`, true})
	case "array":
		return append(common, variant{"object", `{}`, true}, variant{"string", `"x"`, true}, variant{"number", `1`, true},
			variant{"bool", `true`, true}, variant{"numbers", `[1,2]`, true}, variant{"empty", `[]`, false},
			variant{"100000 elements", "[" + strings.Repeat("{},", 99999) + "{}]", false})
	case "object":
		return append(common, variant{"string", `"x"`, true}, variant{"number", `1`, true}, variant{"bool", `true`, true},
			variant{"array", `[]`, true}, variant{"empty", `{}`, false})
	}
	panic(kind)
}

// dataVariants replace the whole data.
var dataVariants = []variant{
	{"data missing", "", true}, {"data null", `null`, false}, {"data array", `[]`, true},
	{"data 100000-element array", "[" + strings.Repeat("1,", 99999) + "1]", true},
	{"data string", `"join"`, true}, {"data number", `42`, true}, {"data -1", `-1`, true}, {"data 1e309", `1e309`, true},
	{"data bool", `true`, true}, {"data empty object", `{}`, false},
}

func envelope(typ, data string) []byte {
	if data == "" {
		return fmt.Appendf(nil, `{"type":%q}`, typ)
	}
	return fmt.Appendf(nil, `{"type":%q,"data":%s}`, typ, data)
}

// setPath returns base with the value at path replaced by raw JSON.
func setPath(base, path, value string) string {
	var doc any
	if err := json.Unmarshal([]byte(base), &doc); err != nil {
		panic(err)
	}
	keys := strings.Split(path, ".")
	cur := doc
	for i, k := range keys {
		last := i == len(keys)-1
		switch c := cur.(type) {
		case map[string]any:
			if last {
				c[k] = json.RawMessage(value)
			} else {
				cur = c[k]
			}
		case []any:
			n, _ := strconv.Atoi(k)
			if last {
				c[n] = json.RawMessage(value)
			} else {
				cur = c[n]
			}
		}
	}
	out, err := json.Marshal(doc)
	if err != nil {
		panic(err)
	}
	return string(out)
}

// badCases builds the table. tok is a valid join token for room "table".
func badCases(tok, realOffer string) []badCase {
	after := []string{CodeBadRequest}
	type spec struct {
		typ    string
		base   string // a payload the server refuses (or, for ping, pong and leave, acts on)
		fields []field
		codes  []string // error codes of what the request does, besides bad_request
	}
	specs := []spec{
		{TypeOffer, `{"sdp":"v=0","tracks":[{"track_id":"a","source":"camera","muted":false}]}`,
			[]field{{"sdp", "string"}, {"tracks", "array"}, {"tracks.0.track_id", "string"}, {"tracks.0.source", "string"}, {"tracks.0.muted", "bool"}},
			[]string{CodeBadSDP, CodeTooManyTracks}},
		{TypeAnswer, `{"sdp":"v=0"}`, []field{{"sdp", "string"}}, []string{CodeBadSDP}},
		{TypeCandidate, `{"target":"publisher","candidate":{"candidate":"candidate:1 1 udp 2130706431 127.0.0.1 9 typ host","sdpMid":"0","sdpMLineIndex":0,"usernameFragment":"u"}}`,
			[]field{{"target", "string"}, {"candidate", "object"}, {"candidate.candidate", "string"}, {"candidate.sdpMid", "string"},
				{"candidate.sdpMLineIndex", "uint16"}, {"candidate.usernameFragment", "string"}}, nil},
		{TypeMute, `{"track_sid":"TR_nope","muted":true}`, []field{{"track_sid", "string"}, {"muted", "bool"}}, nil},
		{TypeUnpublish, `{"track_sid":"TR_nope"}`, []field{{"track_sid", "string"}}, nil},
		{TypeICERestart, `{"target":"publisher"}`, []field{{"target", "string"}}, nil},
		{TypePing, `{"ts":1}`, []field{{"ts", "int"}}, nil},
		{TypePong, `{"ts":1}`, []field{{"ts", "int"}}, nil},
		{TypeLeave, `{"reason":"bye"}`, []field{{"reason", "string"}}, nil},
		// After joining, join and resume are refused with bad_request.
		{TypeJoin, fmt.Sprintf(`{"token":%q,"protocol":1,"room":"table"}`, tok),
			[]field{{"token", "string"}, {"protocol", "int"}, {"room", "string"}}, nil},
		{TypeResume, `{"token":"no-such-session","protocol":1}`, []field{{"token", "string"}, {"protocol", "int"}}, nil},
	}

	// afterJoin is what must happen to a message of type typ after join.
	afterJoin := func(sp spec, fieldPath string, v variant) want {
		codes := append(append([]string{}, after...), sp.codes...)
		switch sp.typ {
		case TypeLeave: // the payload is not read: the client leaves
			return want{close: websocket.CloseNormalClosure}
		case TypePong: // not read either
			return want{codes: codes}
		case TypePing: // a malformed ping still gets its pong
			return want{codes: codes, must: true, pongOK: true}
		case TypeCandidate:
			// A candidate the server cannot parse is refused; one that parses
			// is held until the remote description, or ends gathering (null),
			// or is empty and ignored.
			return want{codes: codes, must: v.bad || fieldPath == "target"}
		}
		// The base payload is refused, and so is every variant of it.
		return want{codes: codes, must: true}
	}
	// firstMessage is what must happen to a join or resume sent first.
	firstMessage := func(sp spec, fieldPath string, v variant) want {
		refused := func(code string) want {
			return want{codes: []string{code}, must: true, close: websocket.ClosePolicyViolation}
		}
		if v.bad {
			return refused(CodeBadRequest)
		}
		switch {
		case fieldPath == "" || fieldPath == "protocol": // data null or {}: protocol 0
			return refused(CodeUnsupportedProtocol)
		case sp.typ == TypeResume:
			return refused(CodeResumeFailed)
		case fieldPath == "token":
			return refused(CodeInvalidToken)
		case fieldPath == "room" && (v.name == "null" || v.name == "empty"):
			return want{joined: true} // room is optional
		case fieldPath == "room":
			return refused(CodeRoomMismatch)
		}
		panic(fieldPath)
	}

	var cs []badCase
	add := func(sp spec, first bool, name, payload, fieldPath string, v variant) {
		w := afterJoin(sp, fieldPath, v)
		when := "after join"
		if first {
			w = firstMessage(sp, fieldPath, v)
			when = "first"
		}
		cs = append(cs, badCase{name: when + "/" + sp.typ + "/" + name, first: first, typ: sp.typ, frame: envelope(sp.typ, payload), want: w})
	}
	for _, sp := range specs {
		firsts := []bool{false}
		if sp.typ == TypeJoin || sp.typ == TypeResume {
			firsts = append(firsts, true)
		}
		for _, first := range firsts {
			for _, v := range dataVariants {
				add(sp, first, v.name, v.value, "", v)
			}
			for _, f := range sp.fields {
				for _, v := range variants(f.kind) {
					add(sp, first, f.path+"="+v.name, setPath(sp.base, f.path, v.value), f.path, v)
				}
			}
		}
	}

	// Unknown fields are ignored: the message does what it would without.
	extra := `"zz_unknown":{"nested":[1,"x",null]},"🙂":1e309`
	withExtra := func(payload string) string {
		if payload == "{}" {
			return "{" + extra + "}"
		}
		return strings.TrimSuffix(payload, "}") + "," + extra + "}"
	}
	cs = append(cs,
		badCase{name: "first/join/unknown fields", first: true, typ: TypeJoin,
			frame: envelope(TypeJoin, withExtra(fmt.Sprintf(`{"token":%q,"protocol":1,"room":"table"}`, tok))), want: want{joined: true}},
		badCase{name: "first/resume/unknown fields", first: true, typ: TypeResume,
			frame: envelope(TypeResume, withExtra(`{"token":"no-such-session","protocol":1}`)),
			want:  want{codes: []string{CodeResumeFailed}, must: true, close: websocket.ClosePolicyViolation}},
		badCase{name: "after join/offer/unknown fields", typ: TypeOffer, want: want{},
			frame: envelope(TypeOffer, withExtra(fmt.Sprintf(`{"sdp":%q,"tracks":[{"track_id":"mic","source":"microphone","zz":[]}]}`, realOffer)))},
		badCase{name: "after join/answer/unknown fields", typ: TypeAnswer, want: want{},
			build: func(t *testing.T, offer string) []byte { return envelope(TypeAnswer, withExtra(answerTo(t, offer))) }},
		badCase{name: "after join/candidate/unknown fields", typ: TypeCandidate, want: want{},
			frame: envelope(TypeCandidate, withExtra(`{"target":"subscriber","candidate":{"candidate":"candidate:1 1 udp 2130706431 127.0.0.1 9 typ host","sdpMid":"0","zz":1}}`))},
		badCase{name: "after join/ice_restart/unknown fields", typ: TypeICERestart, want: want{offer: true}, answerFirst: true,
			frame: envelope(TypeICERestart, withExtra(`{"target":"subscriber"}`))},
		badCase{name: "after join/ping/unknown fields", typ: TypePing, want: want{},
			frame: envelope(TypePing, withExtra(`{"ts":5}`))},
		badCase{name: "after join/pong/unknown fields", typ: TypePong, want: want{},
			frame: envelope(TypePong, withExtra(`{"ts":5}`))},
		badCase{name: "after join/leave/unknown fields", typ: TypeLeave, want: want{close: websocket.CloseNormalClosure},
			frame: envelope(TypeLeave, withExtra(`{}`))},
	)

	// Frames that are not a message of a known type, after join and first.
	garbage := []struct {
		name   string
		frame  string
		binary bool
	}{
		{"not JSON", "hello", false}, {"empty frame", "", false}, {"truncated object", `{"type":"ping","data":{"ts":`, false},
		{"JSON array", `[{"type":"ping"}]`, false}, {"JSON null", `null`, false}, {"JSON string", `"ping"`, false},
		{"JSON number", `1e309`, false}, {"invalid UTF-8", "{\"type\":\"\xff\xfe\"}", false},
		{"type is a number", `{"type":5,"data":{}}`, false}, {"type is null", `{"type":null,"data":{"ts":1}}`, false},
		{"no type", `{"data":{"ts":1}}`, false}, {"empty type", `{"type":"","data":{}}`, false},
		{"unknown type", `{"type":"frobnicate","data":{}}`, false}, {"type in capitals", `{"type":"PING","data":{"ts":1}}`, false},
		{"server-to-client type", `{"type":"joined","data":{}}`, false},
		{"60KB type", `{"type":` + huge + `,"data":{}}`, false},
		{"binary garbage", "\x00\x01\x02\xff", true},
	}
	for _, g := range garbage {
		cs = append(cs,
			badCase{name: "after join/frame/" + g.name, frame: []byte(g.frame), binary: g.binary,
				want: want{codes: []string{CodeBadRequest, CodeUnknownType}, must: true}},
			// "Anything else before [join] gets an error with code not_joined
			// and the connection is closed."
			badCase{name: "first/frame/" + g.name, first: true, frame: []byte(g.frame), binary: g.binary,
				want: want{codes: []string{CodeNotJoined}, must: true, close: websocket.ClosePolicyViolation}},
		)
	}
	// Every other type as the first message: not_joined, closed.
	for _, typ := range []string{TypeOffer, TypeAnswer, TypeCandidate, TypeMute, TypeUnpublish, TypeICERestart, TypePing, TypePong, TypeLeave} {
		for _, v := range []variant{{"valid-looking", `{}`, false}, {"data missing", "", true}} {
			cs = append(cs, badCase{name: "first/" + typ + "/" + v.name, first: true, typ: typ, frame: envelope(typ, v.value),
				want: want{codes: []string{CodeNotJoined}, must: true, close: websocket.ClosePolicyViolation}})
		}
	}
	return cs
}

// answerTo answers a subscriber offer as a browser would, with a pion
// peer connection, and returns the answer payload.
func answerTo(t *testing.T, offer string) string {
	t.Helper()
	pc, err := newAPI(t).NewPeerConnection(webrtc.Configuration{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = pc.Close() })
	if err := pc.SetRemoteDescription(webrtc.SessionDescription{Type: webrtc.SDPTypeOffer, SDP: offer}); err != nil {
		t.Fatal(err)
	}
	ans, err := pc.CreateAnswer(nil)
	if err == nil {
		err = pc.SetLocalDescription(ans)
	}
	if err != nil {
		t.Fatal(err)
	}
	out, _ := json.Marshal(Answer{SDP: ans.SDP})
	return string(out)
}

// browserOffer is a publisher offer for one Opus track with id "mic".
func browserOffer(t *testing.T) string {
	t.Helper()
	pc, err := newAPI(t).NewPeerConnection(webrtc.Configuration{})
	if err != nil {
		t.Fatal(err)
	}
	defer pc.Close()
	tr, err := webrtc.NewTrackLocalStaticRTP(webrtc.RTPCodecCapability{MimeType: webrtc.MimeTypeOpus, ClockRate: 48000, Channels: 2}, "mic", "stream")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := pc.AddTransceiverFromTrack(tr, webrtc.RTPTransceiverInit{Direction: webrtc.RTPTransceiverDirectionSendonly}); err != nil {
		t.Fatal(err)
	}
	offer, err := pc.CreateOffer(nil)
	if err != nil {
		t.Fatal(err)
	}
	return offer.SDP
}

// outcome is what the server did after one bad message.
type outcome struct {
	errs   []Error
	pongs  []int64 // pongs other than the barrier's
	joined bool
	offers []string
	closed error // the read error that ended the socket, if it ended
}

const barrierTS = 777001

// collect reads until the barrier pong (the server handles messages in
// order, so everything the bad message caused came before it), the
// socket closes, or d passes.
func (r *raw) collect(d time.Duration, stopAtJoined bool) (o outcome, timedOut bool) {
	_ = r.ws.SetReadDeadline(time.Now().Add(d))
	for {
		_, data, err := r.ws.ReadMessage()
		if err != nil {
			var ne interface{ Timeout() bool }
			if errors.As(err, &ne) && ne.Timeout() {
				return o, true
			}
			o.closed = err
			return o, false
		}
		var env Envelope
		_ = json.Unmarshal(data, &env)
		switch env.Type {
		case TypeError:
			var e Error
			_ = json.Unmarshal(env.Data, &e)
			o.errs = append(o.errs, e)
		case TypePong:
			var p Ping
			_ = json.Unmarshal(env.Data, &p)
			if p.Timestamp == barrierTS {
				return o, false
			}
			o.pongs = append(o.pongs, p.Timestamp)
		case TypeJoined:
			o.joined = true
			if stopAtJoined {
				return o, false
			}
		case TypeOffer:
			var of Offer
			_ = json.Unmarshal(env.Data, &of)
			o.offers = append(o.offers, of.SDP)
		}
	}
}

func (r *raw) barrier() {
	r.send(TypePing, Ping{Timestamp: barrierTS})
}

// check compares what the server did with w.
func (c badCase) check(t *testing.T, o outcome, timedOut bool) {
	t.Helper()
	w := c.want
	var codes []string
	for _, e := range o.errs {
		codes = append(codes, e.Code)
		if !slices.Contains(w.codes, e.Code) {
			t.Errorf("error %q (%s), want one of %v", e.Code, e.Message, w.codes)
		}
		if e.Message == "" {
			t.Errorf("error %q without a message", e.Code)
		}
		if e.Request != "" && c.typ != "" && e.Request != c.typ {
			t.Errorf("error %q names request %.40q, want %q", e.Code, e.Request, c.typ)
		}
	}
	answered := len(o.errs) > 0 || (w.pongOK && len(o.pongs) > 0)
	if w.must && !answered {
		t.Errorf("no error, want one of %v", w.codes)
	}
	if w.joined && !o.joined {
		t.Errorf("not joined (errors %v, closed: %v)", codes, o.closed)
	}
	if w.offer && len(o.offers) == 0 {
		t.Errorf("no subscriber offer")
	}
	switch {
	case timedOut && w.close != 0:
		t.Errorf("the socket is still open (errors %v), want it closed with %d", codes, w.close)
	case timedOut:
		t.Errorf("no answer to the barrier ping (errors %v)", codes)
	case w.close == 0 && o.closed != nil:
		t.Errorf("the socket closed (%v) after errors %v, want it to stay open", o.closed, codes)
	case w.close != 0 && o.closed == nil:
		t.Errorf("the socket stayed open (errors %v), want it closed with %d", codes, w.close)
	case w.close != 0:
		var ce *websocket.CloseError
		if !errors.As(o.closed, &ce) || ce.Code != w.close {
			t.Errorf("closed with %v, want close code %d", o.closed, w.close)
		}
	}
}

func TestBadInputTable(t *testing.T) {
	const limit = 1 << 20 // room for a 100 000-element array
	s := newTestServer(t, rooms.Config{NegotiationTimeout: 5 * time.Minute},
		Config{MaxMessageBytes: limit, MaxConnectionsPerIP: 1000, ResumeGrace: time.Second})
	alice := joinClient(t, s, "table", "alice")
	bob := joinClient(t, s, "table", "bob")
	alice.publish(true, true)
	bob.publish(true, true)
	kinds := []string{"audio", "video"}
	waitErr(t, 20*time.Second, func() error { return alice.mediaFrom([]string{"bob"}, kinds, 30) })
	waitErr(t, 20*time.Second, func() error { return bob.mediaFrom([]string{"alice"}, kinds, 30) })
	before := map[string]int{}
	for sid, rc := range alice.snapshot() {
		before[sid] = rc.packets
	}

	start := time.Now()
	cases := badCases(s.token(t, "table", "eve-first"), browserOffer(t))
	for i, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			r := rawDial(t, s)
			msgType := websocket.TextMessage
			if c.binary {
				msgType = websocket.BinaryMessage
			}
			if c.first {
				if err := r.ws.WriteMessage(msgType, c.frame); err != nil {
					t.Fatal(err)
				}
				var o outcome
				timedOut := false
				if c.want.joined {
					// The barrier ping goes after joined: a pong may overtake
					// joined (events reach the socket on their own path).
					o, timedOut = r.collect(10*time.Second, true)
					if o.joined {
						r.barrier()
						var o2 outcome
						o2, timedOut = r.collect(10*time.Second, false)
						o.errs, o.closed = append(o.errs, o2.errs...), o2.closed
					}
				} else {
					// The barrier ping, a message before join, is refused
					// with not_joined if the socket is still open: its error
					// shows that the bad frame left the socket open.
					r.barrier()
					o, timedOut = r.collect(10*time.Second, false)
					if n := len(o.errs); n >= 2 && o.errs[n-1].Code == CodeNotJoined {
						o.errs, o.closed = o.errs[:n-1], nil
					}
				}
				c.check(t, o, timedOut)
				if c.want.close == 0 && o.closed == nil && !timedOut {
					r.send(TypeLeave, Leave{})
					r.expectClose(websocket.CloseNormalClosure)
				}
				return
			}
			r.join(s.token(t, "table", fmt.Sprintf("eve-%03d", i)), "table")
			r.next(TypeJoined)
			frame := c.frame
			if c.build != nil || c.answerFirst {
				var of Offer
				_ = json.Unmarshal(r.next(TypeOffer).Data, &of)
				if c.build != nil {
					frame = c.build(t, of.SDP)
				} else {
					_ = r.ws.WriteMessage(websocket.TextMessage, envelope(TypeAnswer, answerTo(t, of.SDP)))
				}
			}
			if err := r.ws.WriteMessage(msgType, frame); err != nil {
				t.Fatal(err)
			}
			r.barrier()
			o, timedOut := r.collect(10*time.Second, false)
			if c.want.offer && len(o.offers) == 0 && o.closed == nil && !timedOut {
				r.next(TypeOffer) // the offer may come after the barrier's pong
				o.offers = append(o.offers, "")
			}
			c.check(t, o, timedOut)
			if o.closed == nil && !timedOut {
				r.stillOpen()
				r.send(TypeLeave, Leave{})
				r.expectClose(websocket.CloseNormalClosure)
			}
		})
	}

	// Size: exactly the limit is read; one byte more closes with 1009,
	// before join and after.
	sized := func(n int) []byte {
		head := `{"type":"ping","data":{"ts":` + strconv.Itoa(barrierTS) + `},"pad":"`
		return []byte(head + strings.Repeat("p", n-len(head)-2) + `"}`)
	}
	t.Run("after join/size/exactly max_message_bytes", func(t *testing.T) {
		r := rawDial(t, s)
		r.join(s.token(t, "table", "eve-size"), "table")
		r.next(TypeJoined)
		_ = r.ws.WriteMessage(websocket.TextMessage, sized(limit))
		o, timedOut := r.collect(10*time.Second, false)
		badCase{want: want{}}.check(t, o, timedOut)
		r.send(TypeLeave, Leave{})
	})
	for _, first := range []bool{true, false} {
		name := "after join/size/max_message_bytes+1"
		if first {
			name = "first/size/max_message_bytes+1"
		}
		t.Run(name, func(t *testing.T) {
			r := rawDial(t, s)
			if !first {
				r.join(s.token(t, "table", "eve-big"), "table")
				r.next(TypeJoined)
			}
			_ = r.ws.WriteMessage(websocket.TextMessage, sized(limit+1))
			r.expectClose(websocket.CloseMessageTooBig)
		})
	}
	t.Logf("%d cases in %s", len(cases)+3, time.Since(start).Round(time.Millisecond))

	// The call carried on: both still receive, intact and continuous, and
	// the room holds only them.
	waitErr(t, 10*time.Second, func() error {
		for sid, rc := range alice.snapshot() {
			if rc.packets < before[sid]+30 {
				return fmt.Errorf("alice's media from %s stalled after the bad input", rc.from)
			}
		}
		return nil
	})
	if err := bob.mediaFrom([]string{"alice"}, kinds, 30); err != nil {
		t.Error(err)
	}
	// Payloads intact; a few packets may be missing: 400 sessions joining
	// and leaving starve two cores under -race, and a forwarder that falls
	// behind drops (NOTES 12) rather than delaying everyone.
	for _, c := range []*testClient{alice, bob} {
		for sid, rc := range c.snapshot() {
			if rc.badBytes > 0 {
				t.Errorf("%s: track %s from %s: %d payloads corrupted", c.identity, sid, rc.from, rc.badBytes)
			}
			if rc.gaps > 0 {
				t.Logf("%s: track %s (%s) from %s: %d discontinuities in %d packets", c.identity, sid, rc.kind, rc.from, rc.gaps, rc.packets)
			}
			if rc.gaps*100 > rc.packets {
				t.Errorf("%s: track %s (%s) from %s: %d discontinuities in %d packets", c.identity, sid, rc.kind, rc.from, rc.gaps, rc.packets)
			}
		}
		c.mu.Lock()
		if len(c.errors) > 0 {
			t.Errorf("%s got errors: %+v", c.identity, c.errors)
		}
		c.mu.Unlock()
	}
	waitFor(t, 10*time.Second, "only alice and bob left in the room", func() bool {
		return len(s.mgr.Room("table").Participants()) == 2
	})
}
