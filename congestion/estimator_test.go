package congestion

import (
	"math/rand"
	"testing"

	"github.com/pion/interceptor/pkg/twcc"
)

// link is a bottleneck: a FIFO served at capacity bits/s, dropping what
// would wait longer than queueUs, then propDelayUs of propagation.
type link struct {
	capacity    float64
	queueUs     int64
	propDelayUs int64
	loss        float64 // random loss after the queue
	freeAt      int64
	rnd         *rand.Rand
}

// send returns when a packet of size bytes sent at now arrives, or -1.
func (l *link) send(now int64, size int) int64 {
	start := max(now, l.freeAt)
	if start-now > l.queueUs {
		return -1
	}
	l.freeAt = start + int64(float64(size*8)/l.capacity*1e6)
	if l.loss > 0 && l.rnd.Float64() < l.loss {
		return -1
	}
	return l.freeAt + l.propDelayUs
}

// sim drives a Controller with a sender that always sends at its target,
// over l, with pion's receiver side building the feedback every 50 ms.
type sim struct {
	t       *testing.T
	c       *Controller
	l       *link
	rec     *twcc.Recorder
	now     int64 // µs
	budget  float64
	pending []arrival
	fbAt    int64
}

type arrival struct {
	seq uint16
	at  int64
}

func newSim(t *testing.T, l *link) *sim {
	c, err := New(Config{InitialBitrate: 1_000_000, MinBitrate: 50_000, MaxBitrate: 50_000_000})
	if err != nil {
		t.Fatal(err)
	}
	l.rnd = rand.New(rand.NewSource(1))
	return &sim{t: t, c: c, l: l, rec: twcc.NewRecorder(1)}
}

const simPacket = 1200

// run advances the simulation by d µs, calling each (if not nil) every
// simulated 100 ms.
func (s *sim) run(d int64, each func(now int64)) {
	end := s.now + d
	for ; s.now < end; s.now += 1000 {
		s.budget += float64(s.c.TargetBitrate()) / 8 / 1000
		for s.budget >= simPacket {
			s.budget -= simPacket
			seq := s.c.sent.take(s.now)
			s.c.sent.record(seq, simPacket, s.now)
			if at := s.l.send(s.now, simPacket); at >= 0 {
				s.pending = append(s.pending, arrival{seq, at})
			}
		}
		kept := s.pending[:0]
		for _, a := range s.pending {
			if a.at <= s.now {
				s.rec.Record(2, a.seq, a.at)
			} else {
				kept = append(kept, a)
			}
		}
		s.pending = kept
		if s.now-s.fbAt >= 50_000 {
			s.fbAt = s.now
			for _, p := range s.rec.BuildFeedbackPacket() {
				b, err := p.Marshal()
				if err != nil {
					s.t.Fatal(err)
				}
				s.c.process(b, s.now)
			}
		}
		if each != nil && s.now%100_000 == 0 {
			each(s.now)
		}
	}
}

func TestEstimatorFollowsCapacity(t *testing.T) {
	const capacity, low = 2_500_000, 700_000
	s := newSim(t, &link{capacity: capacity, queueUs: 400_000, propDelayUs: 20_000})

	// 1. A steady link: the estimate grows toward its capacity.
	var peak int64
	s.run(30_000_000, func(int64) { peak = max(peak, s.c.TargetBitrate()) })
	if got := s.c.TargetBitrate(); peak < capacity*8/10 || got < capacity/2 || got > capacity*3/2 {
		t.Fatalf("after 30 s on a %d bit/s link the estimate is %d (peak %d)", capacity, got, peak)
	}
	t.Logf("steady: estimate %d, peak %d, loss %.3f", s.c.TargetBitrate(), peak, s.c.Loss())

	// 2. The capacity drops: the estimate goes below it within 3 s.
	s.l.capacity = low
	dropAt, below := s.now, int64(-1)
	s.run(10_000_000, func(now int64) {
		if below < 0 && s.c.TargetBitrate() < low {
			below = now - dropAt
		}
	})
	if below < 0 || below > 3_000_000 {
		t.Fatalf("capacity %d -> %d: estimate below it after %d µs (want within 3 s); now %d", capacity, low, below, s.c.TargetBitrate())
	}
	if got := s.c.TargetBitrate(); got < low/3 {
		t.Fatalf("on the %d bit/s link the estimate collapsed to %d", low, got)
	}
	t.Logf("dropped: below %d after %.1f s, estimate %d after 10 s", low, float64(below)/1e6, s.c.TargetBitrate())

	// 3. Recovery.
	s.l.capacity = capacity
	s.run(25_000_000, nil)
	if got := s.c.TargetBitrate(); got < capacity/2 {
		t.Fatalf("25 s after the link recovered to %d the estimate is %d", capacity, got)
	}
	t.Logf("recovered: estimate %d", s.c.TargetBitrate())
}

func TestEstimatorBacksOffOnLoss(t *testing.T) {
	s := newSim(t, &link{capacity: 50_000_000, queueUs: 100_000, propDelayUs: 20_000, loss: 0.2})
	var sum float64
	var n int
	s.run(5_000_000, func(int64) { sum += s.c.Loss(); n++ })
	if got := s.c.TargetBitrate(); got >= 1_000_000 {
		t.Fatalf("with 20%% loss the estimate grew to %d", got)
	}
	if l := sum / float64(n); l < 0.1 || l > 0.3 {
		t.Fatalf("average loss %.3f, want about 0.2", l)
	}
	// The loss stops: the estimate grows again.
	s.l.loss = 0
	before := s.c.TargetBitrate()
	s.run(5_000_000, nil)
	if got := s.c.TargetBitrate(); got <= before || s.c.Loss() > 0.02 {
		t.Fatalf("without loss the estimate went %d -> %d (loss %.3f)", before, got, s.c.Loss())
	}
}

func TestEstimatorNeverBelowMinimum(t *testing.T) {
	s := newSim(t, &link{capacity: 20_000, queueUs: 50_000, propDelayUs: 20_000, loss: 0.5})
	s.run(10_000_000, func(int64) {
		if got := s.c.TargetBitrate(); got < 50_000 {
			t.Fatalf("estimate %d below the minimum", got)
		}
	})
}

func TestRateWindow(t *testing.T) {
	var r rateWindow
	if r.rate() != 0 {
		t.Fatal("rate before any packet")
	}
	// 1000 bytes every 10 ms: 800 kbit/s.
	for at := int64(0); at <= 2_000_000; at += 10_000 {
		r.add(at, 1000)
	}
	if got := r.rate(); got < 760_000 || got > 840_000 {
		t.Fatalf("rate %d, want about 800000", got)
	}
	// A late report of an old packet does not wipe a current bucket.
	r.add(1_000_000, 1000)
	if got := r.rate(); got < 760_000 || got > 840_000 {
		t.Fatalf("after an old packet the rate is %d", got)
	}
}
