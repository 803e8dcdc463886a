package signaling

import (
	"encoding/json"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"net/url"
	"regexp"
	"strings"
	"testing"

	"github.com/parley-rtc/parley/rooms"
)

// The patterns docs/protocol.md and the endpoint's own errors promise.
var (
	devIdentity = regexp.MustCompile(`^[\p{L}\p{N}_.\-]{1,80}$`)  // protocol.md, Tokens
	devRoomName = regexp.MustCompile(`^[\p{L}\p{N}_.\- ]{1,64}$`) // "room and name: 1-64 letters, digits, spaces, '.', '_' or '-'"
)

// FuzzDevToken sends the development token endpoint arbitrary room, name
// and identity parameters (and, when raw is set, an arbitrary raw query
// instead): it never answers 5xx, and a token it mints is valid, for the
// identity and room it names, both within the documented patterns, with
// the identity asked for, and never with the admin grant.
func FuzzDevToken(f *testing.F) {
	f.Add("standup", "Alice", "", "")
	f.Add("standup", "Alice", "alice-tab-1", "")
	f.Add(" standup ", "  ", "ÅSA.ø_9", "")
	f.Add("a b", "Ⅻ İ ǅ", "İ", "")
	f.Add("", "", "", "room=x&name=y&identity=z&room=other")
	f.Add("", "", "", "room=%zz&name=%00")
	f.Add("", "", "", "room=a;name=b")
	f.Add("x", "y", "a/b", "")
	f.Add(strings.Repeat("r", 64), strings.Repeat("n", 65), strings.Repeat("i", 81), "")
	f.Add("room\n", "name\u00a0", "id\u200b", "")
	f.Add("ro\x00om", "\xff\xfe", "\xc3", "")

	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	srv, err := NewServer(Config{}, rooms.NewManager(rooms.Config{}, nil, log), log)
	if err != nil {
		f.Fatal(err)
	}
	h := srv.DevTokenHandler()
	if h == nil {
		f.Fatal("no dev-token handler in development mode")
	}
	f.Fuzz(func(t *testing.T, room, name, identity, raw string) {
		q := url.Values{"room": {room}, "name": {name}}
		if identity != "" {
			q.Set("identity", identity)
		}
		u := &url.URL{Path: "/api/dev-token", RawQuery: q.Encode()}
		if raw != "" {
			u.RawQuery = raw
		}
		req := &http.Request{Method: http.MethodGet, URL: u, Header: http.Header{}, Host: "localhost"}
		w := httptest.NewRecorder()
		h.ServeHTTP(w, req)
		if w.Code >= 500 {
			t.Fatalf("query %q: %d %s", u.RawQuery, w.Code, w.Body)
		}
		if w.Code != http.StatusOK {
			return
		}
		var body struct{ Token, Identity, Room string }
		if err := json.Unmarshal(w.Body.Bytes(), &body); err != nil {
			t.Fatalf("query %q: body %q: %v", u.RawQuery, w.Body, err)
		}
		claims, err := srv.Verify(body.Token)
		if err != nil {
			t.Fatalf("query %q: the token does not verify: %v", u.RawQuery, err)
		}
		if claims.Subject != body.Identity || claims.Room != body.Room {
			t.Fatalf("query %q: token for %q in %q, body says %q in %q", u.RawQuery, claims.Subject, claims.Room, body.Identity, body.Room)
		}
		if !devIdentity.MatchString(claims.Subject) {
			t.Fatalf("query %q: token for identity %q, outside the documented pattern", u.RawQuery, claims.Subject)
		}
		if !devRoomName.MatchString(claims.Room) {
			t.Fatalf("query %q: token for room %q, outside the documented pattern", u.RawQuery, claims.Room)
		}
		if claims.Grants.Admin {
			t.Fatalf("query %q: a development token with the admin grant", u.RawQuery)
		}
		got := u.Query()
		if want := strings.TrimSpace(got.Get("room")); claims.Room != want {
			t.Fatalf("query %q: token for room %q, asked for %q", u.RawQuery, claims.Room, want)
		}
		if want := got.Get("identity"); want != "" && claims.Subject != want {
			t.Fatalf("query %q: token for identity %q, asked for %q", u.RawQuery, claims.Subject, want)
		}
	})
}

// FuzzDevName: devName, which the endpoint checks names with, accepts
// exactly what the documented patterns match (the regular expressions it
// replaced to save the server 2 MB).
func FuzzDevName(f *testing.F) {
	for _, s := range []string{"", "a", "standup", " ", "a b", "ÅSA.ø_9", "Ⅻ İ ǅ", "a/b", "x\n", "n\u00a0", "id\u200b",
		"\xff\xfe", "\xc3", "ro\x00om", "٣٤", "中文", "e\u0301", strings.Repeat("r", 64), strings.Repeat("r", 65),
		strings.Repeat("é", 64), strings.Repeat("é", 65), strings.Repeat("i", 80), strings.Repeat("i", 81)} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		if got, want := devName(s, 64, true), devRoomName.MatchString(s); got != want {
			t.Fatalf("devName(%q, 64, spaces) = %v, the room pattern says %v", s, got, want)
		}
		if got, want := devName(s, 80, false), devIdentity.MatchString(s); got != want {
			t.Fatalf("devName(%q, 80) = %v, the identity pattern says %v", s, got, want)
		}
	})
}
