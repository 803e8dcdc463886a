package rooms

import (
	"encoding/json"
	"fmt"
	"runtime"
	"strings"
	"sync/atomic"
	"testing"
	"time"
)

// countPort is a data port that counts what it is given, for tests and
// benchmarks of the room's side without real data channels.
type countPort struct {
	sent, lossy atomic.Int64
	keep        bool // keep the last message (an allocation per message)
	last        atomic.Pointer[string]
}

func (c *countPort) Send(msg string, _ time.Duration) error {
	if c.keep {
		c.keepLast(msg)
	}
	c.sent.Add(1)
	return nil
}

//go:noinline
func (c *countPort) keepLast(msg string) { c.last.Store(&msg) }

func (c *countPort) SendLossy(string) error {
	c.lossy.Add(1)
	return nil
}

func TestChatLogRingAndIDs(t *testing.T) {
	l := newChatLog(3)
	for i := 1; i <= 5; i++ {
		ts, dup, foreign := l.add(ChatMessage{ID: fmt.Sprint("m", i), From: "a", TS: int64(i)})
		if ts != int64(i) || dup || foreign {
			t.Fatalf("add m%d: %d %v %v", i, ts, dup, foreign)
		}
	}
	var ids []string
	for _, m := range l.history("x") {
		ids = append(ids, m.ID)
	}
	if strings.Join(ids, ",") != "m3,m4,m5" {
		t.Fatalf("history %v, want the last three", ids)
	}
	// m1 left the history but its id is remembered.
	if ts, dup, foreign := l.add(ChatMessage{ID: "m1", From: "a", TS: 99}); ts != 1 || !dup || foreign {
		t.Fatalf("resent m1: %d %v %v", ts, dup, foreign)
	}
	if _, dup, foreign := l.add(ChatMessage{ID: "m1", From: "b", TS: 99}); !dup || !foreign {
		t.Fatal("m1 from another sender was not refused")
	}
	// Direct messages are seen only by their two ends.
	l.add(ChatMessage{ID: "d1", From: "a", To: "b", TS: 6})
	for who, want := range map[string]int{"a": 3, "b": 3, "c": 2} {
		if got := len(l.history(who)); got != want {
			t.Errorf("%s sees %d messages, want %d", who, got, want)
		}
	}
	// The id memory is bounded: after minSeenIDs more, m1 is forgotten.
	for i := 0; i < minSeenIDs; i++ {
		l.add(ChatMessage{ID: fmt.Sprint("x", i), From: "a"})
	}
	if _, dup, _ := l.add(ChatMessage{ID: "m1", From: "a"}); dup {
		t.Fatal("the id memory grew without bound")
	}
	if len(l.seen) != minSeenIDs || len(l.ids) != minSeenIDs {
		t.Fatalf("id memory holds %d/%d, want %d", len(l.seen), len(l.ids), minSeenIDs)
	}
}

func TestDataConfigValidate(t *testing.T) {
	for _, c := range []struct {
		cfg  DataConfig
		want string
	}{
		{DataConfig{History: -1}, "data.history"},
		{DataConfig{MaxMessageBytes: 1 << 20}, "data.max_message_bytes"},
		{DataConfig{MaxMessageBytes: 1000, MaxMetadataBytes: 1000}, "data.max_metadata_bytes"},
		{DataConfig{TypingTimeout: -time.Second}, "data.typing_timeout"},
		{DataConfig{History: 20000}, "data.history"},
	} {
		if err := c.cfg.validate(); err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%+v: %v, want an error naming %s", c.cfg, err, c.want)
		}
	}
	var d DataConfig
	if err := d.validate(); err != nil || d.History != 200 || d.RateLimit != 30 || d.AwayAfter != 20*time.Second {
		t.Fatalf("defaults: %v %+v", err, d)
	}
}

// TestPresenceEntryIsTakenOverByDuplicate: a second session of the same
// identity takes over its presence entry; nobody is told it left.
func TestPresenceEntryIsTakenOverByDuplicate(t *testing.T) {
	m := newManager(t, Config{})
	a, _, _ := join(t, m, "r", "alice")
	b, _, _ := join(t, m, "r", "bob")
	bp := &countPort{keep: true}
	b.attachData(bp)
	a.attachData(&countPort{})
	a2, _, err := join(t, m, "r", "alice")
	if err != nil {
		t.Fatal(err)
	}
	r := m.Room("r")
	r.dmu.Lock()
	e := r.presence["alice"]
	n := len(r.presence)
	r.dmu.Unlock()
	if n != 2 || e.part != a2 || e.SID != a2.SID() || e.Status != StatusOnline {
		t.Fatalf("alice's entry after the duplicate join: %d entries, %+v", n, e.Presence)
	}
	waitUntil(t, func() bool { return bp.last.Load() != nil && strings.Contains(*bp.last.Load(), a2.SID()) })
	if got := *bp.last.Load(); strings.Contains(got, "presence_left") {
		t.Fatalf("bob was told alice left: %s", got)
	}
}

// sentOrQueued counts what alice's writer sent and what waits for it. The
// port's count is read on both sides of the queue's length and the read
// repeated until it did not move: otherwise a message the writer moved
// from the queue to the port between the two reads would count twice.
func sentOrQueued(queued func() int, sent *atomic.Int64) int64 {
	for {
		s1 := sent.Load()
		n := queued()
		if sent.Load() == s1 {
			return s1 + int64(n)
		}
	}
}

func waitUntil(t *testing.T, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatal("timed out")
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// BenchmarkChatFanout100 measures the server's side of room chat: one
// room of 100 participants, each message decoded, checked, rate-limited,
// stored, acknowledged and queued for the 99 others, whose writers hand
// it to their data channel (a counter here: SCTP and DTLS are pion's).
// It reports relayed deliveries per second and memory per participant
// (the room's data state and queues, without the peer connections).
func BenchmarkChatFanout100(b *testing.B) {
	const n = 100
	m := newManager(b, Config{MaxParticipants: n, NegotiationTimeout: time.Hour, Data: DataConfig{RateLimit: 64, RateWindow: time.Nanosecond}})
	parts := make([]*Participant, n)
	ports := make([]*countPort, n)
	var before, after runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&before)
	for i := range parts {
		id := fmt.Sprintf("p%03d", i)
		p, err := m.Join(JoinParams{Room: "bench", Identity: id, Name: id, Grants: Grants{Subscribe: true, Data: true}, Sink: &recSink{}})
		if err != nil {
			b.Fatal(err)
		}
		parts[i], ports[i] = p, &countPort{keep: i == 1}
		p.attachData(ports[i])
	}
	total := func() (s int64) {
		for _, p := range ports {
			s += p.sent.Load()
		}
		return s
	}
	// Let the join traffic (rosters, presence) settle before measuring.
	for last := int64(-1); total() != last; time.Sleep(50 * time.Millisecond) {
		last = total()
	}
	start := total()
	msgs := make([][]byte, 1024)
	b.ReportAllocs()
	b.ResetTimer()
	t0 := time.Now()
	// Every message yields 99 deliveries and one ack. The writers run
	// concurrently with this loop; every 256 messages it lets them all
	// catch up, as rate limits would, so that no queue (1024) overflows
	// however unfairly the writers are scheduled.
	deadline := time.Now().Add(time.Minute)
	catchUp := func(want int64) {
		for total() < want {
			if time.Now().After(deadline) {
				b.Fatalf("%d of %d messages delivered", total()-start, want-start)
			}
			time.Sleep(100 * time.Microsecond)
		}
	}
	for i := 0; i < b.N; i++ {
		msgs[i%len(msgs)] = fmt.Appendf(msgs[i%len(msgs)][:0], `{"type":"chat","id":"m%d","text":"hello, this is message number %d"}`, i, i)
		parts[i%n].handleData(false, msgs[i%len(msgs)])
		if i%256 == 255 {
			catchUp(start + int64(i+1)*n)
		}
	}
	catchUp(start + int64(b.N)*n)
	elapsed := time.Since(t0)
	b.StopTimer()
	b.ReportMetric(float64(b.N)*(n-1)/elapsed.Seconds(), "deliveries/s")
	runtime.GC()
	runtime.ReadMemStats(&after)
	// Heap per participant with a full history: the room state, queues
	// and the (unconnected) peer connections' server objects.
	b.ReportMetric(float64(after.HeapAlloc-before.HeapAlloc)/n/1024, "KiB/participant")
	var last struct{ Type string }
	if err := json.Unmarshal([]byte(*ports[1].last.Load()), &last); err != nil || (last.Type != "chat" && last.Type != "chat_ack") {
		b.Fatalf("last message %q: %v", *ports[1].last.Load(), err)
	}
}

// FuzzDataMessage feeds arbitrary client messages to a participant's data
// channel handler: it must never panic, must answer a message that is not
// JSON with an error, and must keep the room's state consistent (every
// roster entry, with its metadata, still encodes as JSON).
func FuzzDataMessage(f *testing.F) {
	for _, s := range []string{
		`{"type":"chat","id":"a1","text":"hi"}`, `{"type":"chat","id":"a2","text":"psst","to":"bob"}`,
		`{"type":"presence","hand":true,"typing":true,"metadata":{"k":[1,2]}}`, `{"type":"presence","metadata":null,"away":false}`,
		`{"type":"data","topic":"t","payload":{"x":1},"to":["bob","bob"]}`, `{"type":"pointer","track_sid":"TR_x","x":0.5,"y":1}`,
		`{"type":"heartbeat"}`, `not json`, `{"type":"chat","id":"a1","text":"x","to":["x"]}`, `{}`, `[]`, `null`,
	} {
		f.Add(false, []byte(s))
		f.Add(true, []byte(s))
	}
	m := newManager(f, Config{NegotiationTimeout: time.Hour, Data: DataConfig{RateLimit: 64, RateWindow: time.Nanosecond,
		LossyRateLimit: 64, MaxMessageBytes: 2048, MaxMetadataBytes: 256, History: 16}})
	alice, err := m.Join(JoinParams{Room: "fuzz", Identity: "alice", Grants: Grants{Data: true}, Sink: &recSink{}})
	if err != nil {
		f.Fatal(err)
	}
	bob, err := m.Join(JoinParams{Room: "fuzz", Identity: "bob", Grants: Grants{Data: true}, Sink: &recSink{}})
	if err != nil {
		f.Fatal(err)
	}
	ap, bp := &countPort{}, &countPort{}
	alice.attachData(ap)
	bob.attachData(bp)
	r := m.Room("fuzz")
	f.Fuzz(func(t *testing.T, lossy bool, msg []byte) {
		alice.lossyErrAt = time.Time{} // every lossy error is reported
		before := sentOrQueued(alice.dq.Len, &ap.sent)
		alice.handleData(lossy, msg)
		var head struct{ Type string }
		if json.Unmarshal(msg, &head) != nil && len(msg) <= 2048 {
			// Not JSON: exactly one error for the sender.
			waitUntil(t, func() bool { return sentOrQueued(alice.dq.Len, &ap.sent) >= before+1 })
		}
		r.dmu.Lock()
		defer r.dmu.Unlock()
		for _, e := range r.presence {
			if _, err := json.Marshal(e.Presence); err != nil {
				t.Fatalf("presence of %s no longer encodes: %v", e.Identity, err)
			}
		}
	})
}
