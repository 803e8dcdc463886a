package events

import (
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/parley-rtc/parley/rooms"
)

func TestBusKeepsAndWakes(t *testing.T) {
	b := NewBus(3)
	evs, changed, missed := b.After(0)
	if len(evs) != 0 || missed {
		t.Fatalf("empty bus: %v %v", evs, missed)
	}
	b.Publish(rooms.Event{Type: rooms.EventRoomStarted, Room: "r", Time: time.Unix(1, 0)})
	select {
	case <-changed:
	default:
		t.Fatal("a waiting reader was not woken")
	}
	for i := 0; i < 4; i++ {
		b.Publish(rooms.Event{Type: rooms.EventParticipantJoin, Room: "r", Participant: &rooms.EventParticipant{Identity: "a"}})
	}
	// Five events, three kept: ids 3, 4, 5.
	evs, _, missed = b.After(1)
	if !missed || len(evs) != 3 || evs[0].ID != 3 || evs[2].ID != 5 || b.Oldest() != 3 || b.Last() != 5 {
		t.Fatalf("after 1: missed=%v %+v oldest %d last %d", missed, evs, b.Oldest(), b.Last())
	}
	evs, _, missed = b.After(3)
	if missed || len(evs) != 2 || evs[0].ID != 4 {
		t.Fatalf("after 3: missed=%v %+v", missed, evs)
	}
	if evs, _, missed = b.After(5); missed || len(evs) != 0 {
		t.Fatalf("after the last: missed=%v %+v", missed, evs)
	}
}

func TestWebhookQueueDropsOldestAndRetries(t *testing.T) {
	var mu sync.Mutex
	var ids []string
	fail := 2 // the first two attempts fail
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		defer mu.Unlock()
		if fail > 0 {
			fail--
			w.WriteHeader(http.StatusServiceUnavailable)
			return
		}
		ids = append(ids, r.Header.Get("X-Parley-Event-Id"))
	}))
	defer srv.Close()
	w, err := NewWebhooks(WebhookConfig{URLs: []string{srv.URL}, Queue: 2, Key: "k", Secret: "s",
		Backoff: []time.Duration{10 * time.Millisecond, 10 * time.Millisecond, 10 * time.Millisecond}},
		slog.New(slog.NewTextHandler(io.Discard, nil)))
	if err != nil {
		t.Fatal(err)
	}
	defer w.Close()
	// Event 1 is taken by the sender at once and retried; 2, 3, 4 queue up
	// behind it in a queue of 2, so 2 is dropped.
	for id := int64(1); id <= 4; id++ {
		w.Enqueue(Event{ID: id}, []byte(`{}`))
		if id == 1 {
			time.Sleep(5 * time.Millisecond)
		}
	}
	deadline := time.Now().Add(5 * time.Second)
	for {
		mu.Lock()
		n := len(ids)
		mu.Unlock()
		if n >= 3 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("delivered %v", ids)
		}
		time.Sleep(5 * time.Millisecond)
	}
	mu.Lock()
	got := append([]string(nil), ids...)
	mu.Unlock()
	if len(got) != 3 || got[0] != "1" || got[1] != "3" || got[2] != "4" {
		t.Fatalf("delivered %v, want 1 (after two retries), 3, 4", got)
	}
	// The receiver has the third event before its sender counts it sent.
	for {
		dropped, failures, sent := w.Stats()
		if dropped == 1 && failures == 2 && sent == 3 {
			break
		}
		if time.Now().After(deadline) || sent > 3 || dropped > 1 || failures > 2 {
			t.Fatalf("stats: dropped %d failures %d sent %d, want 1, 2, 3", dropped, failures, sent)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func TestWebhookConfigValidate(t *testing.T) {
	for _, u := range []string{"ftp://x/y", "not a url", "http://"} {
		c := WebhookConfig{URLs: []string{u}}
		if c.Validate() == nil {
			t.Errorf("%q accepted", u)
		}
	}
}

// TestBusRemoteEvents: in a cluster this node's events name it and go to
// the receivers (webhooks, other nodes); another node's events are kept
// and streamed, numbered here, but reach no receiver.
func TestBusRemoteEvents(t *testing.T) {
	alone := NewBus(0)
	var alonePayload []byte
	alone.OnEvent(func(_ Event, data []byte) { alonePayload = data })
	alone.Publish(rooms.Event{Type: rooms.EventRoomStarted, Room: "r", Time: time.Unix(1, 0)})
	if strings.Contains(string(alonePayload), `"node"`) {
		t.Fatalf("a single node's event names a node: %s", alonePayload)
	}

	b := NewBus(0)
	b.SetNode("a")
	var got []string
	b.OnEvent(func(e Event, data []byte) { got = append(got, e.Node+":"+e.Type+":"+string(data)) })
	b.Publish(rooms.Event{Type: rooms.EventRoomStarted, Room: "r", Time: time.Unix(1, 0)})
	if len(got) != 1 || !strings.Contains(got[0], `"node":"a"`) {
		t.Fatalf("local event to the receivers: %v", got)
	}
	_, changed, _ := b.After(b.Last())
	remote := `{"id":77,"type":"participant_joined","time":2000,"room":"s","participant":{"sid":"PA_1","identity":"bob","name":"Bob"},"node":"b"}`
	if err := b.PublishRemote([]byte(remote)); err != nil {
		t.Fatal(err)
	}
	if b.PublishRemote([]byte(`not json`)) == nil {
		t.Fatal("a broken remote event was kept")
	}
	select {
	case <-changed:
	default:
		t.Fatal("a remote event did not wake the streams")
	}
	if len(got) != 1 {
		t.Fatalf("a remote event reached a receiver (a second webhook delivery): %v", got)
	}
	evs, _, _ := b.After(1)
	if len(evs) != 1 || evs[0].ID != 2 || evs[0].Node != "b" || evs[0].Room != "s" || evs[0].Time != 2000 ||
		evs[0].Participant == nil || evs[0].Participant.Identity != "bob" {
		t.Fatalf("remote event as kept: %+v", evs)
	}
}
