package rooms

import (
	"errors"
	"io"
	"log/slog"
	"sync"
	"testing"

	"github.com/parley-rtc/parley/sfu"
)

type recSink struct {
	mu  sync.Mutex
	evs []any
}

func (s *recSink) Send(ev any) {
	s.mu.Lock()
	s.evs = append(s.evs, ev)
	s.mu.Unlock()
}

func (s *recSink) events() []any {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]any{}, s.evs...)
}

func newManager(t testing.TB, cfg Config) *Manager {
	t.Helper()
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	e, err := sfu.NewEngine(sfu.Config{ListenIP: "127.0.0.1", IncludeLoopback: true}, log)
	if err != nil {
		t.Fatal(err)
	}
	m := NewManager(cfg, e, log)
	t.Cleanup(func() { m.Close(); _ = e.Close() })
	return m
}

func join(t testing.TB, m *Manager, room, identity string) (*Participant, *recSink, error) {
	t.Helper()
	s := &recSink{}
	p, err := m.Join(JoinParams{Room: room, Identity: identity, Name: identity, Grants: Grants{Publish: true, Subscribe: true}, Sink: s})
	return p, s, err
}

func TestJoinedComesFirstAndOthersAreTold(t *testing.T) {
	m := newManager(t, Config{})
	a, as, err := join(t, m, "r", "alice")
	if err != nil {
		t.Fatal(err)
	}
	_, bs, err := join(t, m, "r", "bob")
	if err != nil {
		t.Fatal(err)
	}
	first, ok := bs.events()[0].(Joined)
	if !ok || first.Self.Identity != "bob" || len(first.Others) != 1 || first.Others[0].SID != a.SID() {
		t.Fatalf("bob's first event %+v", bs.events()[0])
	}
	evs := as.events()
	if pj, ok := evs[len(evs)-1].(ParticipantJoined); !ok || pj.Participant.Identity != "bob" {
		t.Fatalf("alice was not told bob joined: %+v", evs)
	}
	a.Leave("left")
	found := false
	for _, ev := range bs.events() {
		if pl, ok := ev.(ParticipantLeft); ok && pl.SID == a.SID() && pl.Reason == "left" {
			found = true
		}
	}
	if !found {
		t.Fatal("bob was not told alice left")
	}
	a.Leave("again") // idempotent
}

func TestLimits(t *testing.T) {
	m := newManager(t, Config{MaxParticipants: 2, MaxRooms: 2})
	for _, id := range []string{"a", "b"} {
		if _, _, err := join(t, m, "r1", id); err != nil {
			t.Fatal(err)
		}
	}
	if _, _, err := join(t, m, "r1", "c"); !errors.Is(err, ErrRoomFull) {
		t.Fatalf("third in a room of 2: %v", err)
	}
	if _, _, err := join(t, m, "r2", "x"); err != nil {
		t.Fatal(err)
	}
	if _, _, err := join(t, m, "r3", "y"); !errors.Is(err, ErrTooManyRooms) {
		t.Fatalf("third room of 2: %v", err)
	}
	if m.Room("r3") != nil {
		t.Fatal("a refused join left a room behind")
	}
}

func TestDuplicateIdentityReplaces(t *testing.T) {
	m := newManager(t, Config{MaxParticipants: 1})
	old, olds, err := join(t, m, "r", "alice")
	if err != nil {
		t.Fatal(err)
	}
	// The room is full, but the same identity replaces its older session.
	p, _, err := join(t, m, "r", "alice")
	if err != nil {
		t.Fatal(err)
	}
	evs := olds.events()
	if c, ok := evs[len(evs)-1].(Closed); !ok || c.Reason != "duplicate_identity" {
		t.Fatalf("old session's last event %+v", evs[len(evs)-1])
	}
	got := m.Room("r").Participants()
	if len(got) != 1 || got[0].SID != p.SID() || got[0].SID == old.SID() {
		t.Fatalf("room %+v", got)
	}
}

func TestEmptyRoomIsDeletedAndCloseRefusesJoins(t *testing.T) {
	m := newManager(t, Config{})
	p, _, err := join(t, m, "r", "a")
	if err != nil {
		t.Fatal(err)
	}
	p.Leave("left")
	if m.Room("r") != nil || len(m.Rooms()) != 0 {
		t.Fatal("empty room was kept")
	}
	_, s, err := join(t, m, "r", "b")
	if err != nil {
		t.Fatal(err)
	}
	m.Close()
	evs := s.events()
	if c, ok := evs[len(evs)-1].(Closed); !ok || c.Reason != "server_shutdown" {
		t.Fatalf("last event %+v", evs[len(evs)-1])
	}
	if _, _, err := join(t, m, "r", "c"); !errors.Is(err, ErrClosed) {
		t.Fatalf("join after Close: %v", err)
	}
}

func TestOfferChecks(t *testing.T) {
	m := newManager(t, Config{MaxTracksPerParticipant: 1})
	s := &recSink{}
	viewer, err := m.Join(JoinParams{Room: "r", Identity: "v", Grants: Grants{Subscribe: true}, Sink: s})
	if err != nil {
		t.Fatal(err)
	}
	if err := viewer.HandleOffer("v=0", nil); !errors.Is(err, ErrPermission) {
		t.Fatalf("offer without publish grant: %v", err)
	}
	p, _, _ := join(t, m, "r", "p")
	if err := p.HandleOffer("v=0", []TrackDesc{{TrackID: "a", Source: SourceCamera}, {TrackID: "b", Source: SourceMicrophone}}); !errors.Is(err, ErrTooManyTracks) {
		t.Fatalf("two tracks over a limit of one: %v", err)
	}
	if err := p.HandleOffer("v=0", []TrackDesc{{TrackID: "a", Source: "hologram"}}); !errors.Is(err, ErrBadDescription) {
		t.Fatalf("unknown source: %v", err)
	}
	if err := p.SetMuted("TR_none", true); !errors.Is(err, ErrUnknownTrack) {
		t.Fatalf("mute unknown track: %v", err)
	}
	if err := p.AddCandidate("sideways", webrtcCandidate()); !errors.Is(err, ErrBadTarget) {
		t.Fatalf("bad target: %v", err)
	}
}
