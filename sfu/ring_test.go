package sfu

import (
	"encoding/binary"
	"math/rand/v2"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// stream puts count packets of size bytes, every gap, into r, starting at
// packet number first and time t0; each packet carries its number.
func stream(r *ring, first uint64, count, size int, t0 int64, gap time.Duration) (last uint64, now int64) {
	pkt := make([]byte, size)
	for i := 0; i < count; i++ {
		num := first + uint64(i)
		now = t0 + int64(i)*int64(gap)
		fill(pkt, num)
		r.put(num, pkt, now)
		last = num
	}
	return last, now
}

// fill makes pkt's bytes a function of num, so a torn or wrong copy shows.
func fill(pkt []byte, num uint64) {
	for i := range pkt {
		pkt[i] = byte(num*7 + uint64(i))
	}
	if len(pkt) >= 8 {
		binary.BigEndian.PutUint64(pkt, num)
	}
}

func intact(t *testing.T, r *ring, num uint64, size int) {
	t.Helper()
	buf := make([]byte, packetMTU)
	want := make([]byte, size)
	fill(want, num)
	n, _, ok := r.get(num, buf)
	if !ok {
		t.Fatalf("packet %d is gone", num)
	}
	if n != size || string(buf[:n]) != string(want) {
		t.Fatalf("packet %d: got %d bytes, not the ones stored", num, n)
	}
}

// TestRingOpusTakesLittleRoom: 100-byte Opus packets every 20 ms fill a
// 16 KiB arena at most, not 128 slots of packetMTU (192 KiB), and the last
// audioRingSize packets are all kept.
func TestRingOpusTakesLittleRoom(t *testing.T) {
	r := newRing(audioRingSize, audioArenaStart)
	last, _ := stream(&r, 1, 500, 100, 0, 20*time.Millisecond)
	if len(r.arena) > 16<<10 {
		t.Fatalf("arena %d bytes for 100-byte packets", len(r.arena))
	}
	for num := last - audioRingSize + 1; num <= last; num++ {
		intact(t, &r, num, 100)
	}
	if _, _, ok := r.get(last-audioRingSize, make([]byte, packetMTU)); ok {
		t.Fatal("kept more packets than slots")
	}
}

// TestRingKeepsTwoSecondsOfVideo: a 1.7 Mbit/s layer (1100-byte packets,
// 190 a second) grows its arena until two seconds fit, keeps every packet
// of the last two seconds, and stops growing there.
func TestRingKeepsTwoSecondsOfVideo(t *testing.T) {
	r := newRing(ringSize, videoArenaStart)
	gap := time.Second / 190
	last, now := stream(&r, 1, 190*10, 1100, 0, gap)
	if len(r.arena) >= ringSize*packetMTU {
		t.Fatalf("arena grew to its maximum (%d bytes) for 1.7 Mbit/s", len(r.arena))
	}
	if need := 2 * 190 * 1100; len(r.arena) < need {
		t.Fatalf("arena %d bytes, two seconds are %d", len(r.arena), need)
	}
	grown := r.grown
	for num := last; num > last-ringSize; num-- {
		if age := now - int64(num-1)*int64(gap); age >= int64(ringKeep) {
			break
		}
		intact(t, &r, num, 1100)
	}
	// Steady state: no more growth, no allocation.
	stream(&r, last+1, 190*5, 1100, now+int64(gap), gap)
	if r.grown != grown {
		t.Fatalf("arena grew again at a steady rate (%d → %d times)", grown, r.grown)
	}
	pkt := make([]byte, 1100)
	num, at := last+190*5+1, now+6*int64(time.Second)
	if a := testing.AllocsPerRun(1000, func() {
		r.put(num, pkt, at)
		num++
		at += int64(gap)
	}); a != 0 {
		t.Fatalf("%v allocations per packet", a)
	}
}

// TestRingFullSizePacketsBurst: a keyframe burst of full-size packets, all
// at one instant, grows the arena to its maximum, where every slot's
// packet fits: the slot count is the only limit, as before the arena.
func TestRingFullSizePacketsBurst(t *testing.T) {
	r := newRing(ringSize, videoArenaStart)
	last, _ := stream(&r, 1, 3*ringSize, packetMTU, 0, 0)
	if len(r.arena) != ringSize*packetMTU {
		t.Fatalf("arena %d bytes, want the maximum %d", len(r.arena), ringSize*packetMTU)
	}
	for num := last - ringSize + 1; num <= last; num++ {
		intact(t, &r, num, packetMTU)
	}
	if r.grown > 5 {
		t.Fatalf("grew %d times from %d to %d bytes", r.grown, videoArenaStart, len(r.arena))
	}
}

// TestRingOldBytesGoFirst: packets older than ringKeep give their bytes
// to new ones before the arena grows, packets younger are kept, and what
// get returns is always the packet asked for, never another's bytes.
func TestRingOldBytesGoFirst(t *testing.T) {
	r := newRing(64, 4<<10) // 64 slots; 50 ms apart, 40 packets are ringKeep
	rng := rand.New(rand.NewPCG(1, 2))
	sizes := map[uint64]int{}
	const gap = 50 * time.Millisecond
	buf := make([]byte, packetMTU)
	evicted := 0
	for num := uint64(1); num <= 3000; num++ {
		size := 1 + rng.IntN(packetMTU)
		sizes[num] = size
		pkt := make([]byte, size)
		fill(pkt, num)
		r.put(num, pkt, int64(num)*int64(gap))
		for back := uint64(0); back < 64 && back < num; back++ {
			k := num - back
			n, _, ok := r.get(k, buf)
			if !ok {
				if time.Duration(back)*gap < ringKeep {
					t.Fatalf("after %d: packet %d, %v old, is gone", num, k, time.Duration(back)*gap)
				}
				evicted++
				continue
			}
			want := make([]byte, sizes[k])
			fill(want, k)
			if string(buf[:n]) != string(want) {
				t.Fatalf("after %d: packet %d has other bytes", num, k)
			}
		}
	}
	if evicted == 0 || len(r.arena) == r.max {
		t.Fatalf("arena %d of %d bytes, %d old packets evicted: the bytes limit was not exercised", len(r.arena), r.max, evicted)
	}
}

// TestRingReadersNeverSeeTornPackets: downtrack writers copy packets out
// while the read loop overwrites and grows; run with -race.
func TestRingReadersNeverSeeTornPackets(t *testing.T) {
	r := newRing(ringSize, 4<<10)
	var newest atomic.Uint64
	var done atomic.Bool
	var wg sync.WaitGroup
	var checked atomic.Int64
	for i := 0; i < 3; i++ {
		wg.Add(1)
		go func(seed uint64) {
			defer wg.Done()
			rng := rand.New(rand.NewPCG(seed, 9))
			buf := make([]byte, packetMTU)
			for !done.Load() {
				top := newest.Load()
				if top == 0 {
					continue
				}
				num := top - uint64(rng.IntN(int(min(top, ringSize+50))))
				n, _, ok := r.get(num, buf)
				if !ok {
					continue
				}
				want := make([]byte, n)
				fill(want, num)
				if n < 8 || binary.BigEndian.Uint64(buf) != num || string(buf[:n]) != string(want) {
					t.Errorf("packet %d: torn or wrong copy", num)
					return
				}
				checked.Add(1)
			}
		}(uint64(i))
	}
	pkt := make([]byte, packetMTU)
	now := int64(0)
	for num := uint64(1); num <= 20000; num++ {
		size := 8 + int(num*37%uint64(packetMTU-8))
		fill(pkt[:size], num)
		now += int64(time.Millisecond / 4)
		r.put(num, pkt[:size], now)
		newest.Store(num)
	}
	done.Store(true)
	wg.Wait()
	if checked.Load() == 0 {
		t.Fatal("the readers checked no packet")
	}
	t.Logf("%d copies checked, arena grew %d times to %d bytes", checked.Load(), r.grown, len(r.arena))
}
