package sfu

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"sync/atomic"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// batchSender is a media socket with batched I/O, bound on network
// ("udp4": 127.0.0.1, "udp": the dual-stack wildcard, as the engine's).
func batchSender(t testing.TB, network string) (*net.UDPConn, *udpIO) {
	t.Helper()
	addr := &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)}
	if network == "udp" {
		addr = &net.UDPAddr{}
	}
	c, err := net.ListenUDP(network, addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	io := newUDPIO(c, c)
	if io == nil {
		t.Fatal("no batched I/O on a UDP socket")
	}
	return c, io
}

// sink is a receiving socket on loopback.
func sink(t testing.TB) *net.UDPConn {
	t.Helper()
	c, err := net.ListenUDP("udp4", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	_ = c.SetReadBuffer(1 << 20)
	t.Cleanup(func() { c.Close() })
	return c
}

// readAll reads what c receives until it has been quiet for a while.
func readAll(t *testing.T, c *net.UDPConn) [][]byte {
	t.Helper()
	var got [][]byte
	buf := make([]byte, 65536)
	for {
		_ = c.SetReadDeadline(time.Now().Add(200 * time.Millisecond))
		n, err := c.Read(buf)
		if err != nil {
			if !errors.Is(err, os.ErrDeadlineExceeded) {
				t.Fatal(err)
			}
			return got
		}
		got = append(got, append([]byte(nil), buf[:n]...))
	}
}

// queue puts one datagram of n bytes, all b, into q for path p.
func queue(t *testing.T, q *sendBatch, p *directPath, n int, b byte, d *DownTrack) {
	t.Helper()
	buf := q.next()
	copy(buf[:n], bytes.Repeat([]byte{b}, n))
	if err := q.commit(p, p.addr.Load(), n, txNote{d: d, at: monoNow(), n: n, octets: n}); err != nil {
		t.Fatal(err)
	}
}

func pathTo(c *net.UDPConn) *directPath {
	p := &directPath{}
	p.addr.Store(c.LocalAddr().(*net.UDPAddr))
	return p
}

// TestSendBatchDelivers: every datagram a batch holds reaches its address,
// whole and in its order there, on an IPv4 socket and on a dual-stack one
// (v4-mapped addresses). With GSO the datagrams to one address of one
// size go as one message, which ends at a shorter one and never takes a
// larger one; without it, one message each.
func TestSendBatchDelivers(t *testing.T) {
	for _, network := range []string{"udp4", "udp"} {
		for _, gso := range []bool{true, false} {
			t.Run(fmt.Sprintf("%s/gso=%v", network, gso), func(t *testing.T) {
				_, io := batchSender(t, network)
				if gso && !io.gso.Load() {
					t.Fatal("this kernel does not take UDP GSO")
				}
				io.gso.Store(gso)
				q := newSendBatch(io)
				ra, rb := sink(t), sink(t)
				a, b := pathTo(ra), pathTo(rb)
				da, db := &DownTrack{}, &DownTrack{}
				// A: 1000 x3, 600 (ends the message), 1000 (a new one);
				// B: 500 x2, 700 (larger: a new message).
				order := []struct {
					p *directPath
					n int
					d *DownTrack
				}{{a, 1000, da}, {b, 500, db}, {a, 1000, da}, {b, 500, db}, {a, 1000, da}, {b, 700, db}, {a, 600, da}, {a, 1000, da}}
				for i, o := range order {
					queue(t, q, o.p, o.n, byte(i+1), o.d)
				}
				wantMsgs := 4
				if !gso {
					wantMsgs = len(order)
				}
				if q.m != wantMsgs {
					t.Fatalf("%d messages for %d datagrams, want %d", q.m, len(order), wantMsgs)
				}
				q.flush()
				if q.pending() || io.calls.Load() != 1 || io.msgs.Load() != uint64(wantMsgs) || io.pkts.Load() != uint64(len(order)) || io.errs.Load() != 0 {
					t.Fatalf("calls %d msgs %d pkts %d errs %d", io.calls.Load(), io.msgs.Load(), io.pkts.Load(), io.errs.Load())
				}
				check := func(c *net.UDPConn, p *directPath, d *DownTrack) {
					var want [][]byte
					for i, o := range order {
						if o.p == p {
							want = append(want, bytes.Repeat([]byte{byte(i + 1)}, o.n))
						}
					}
					got := readAll(t, c)
					if len(got) != len(want) {
						t.Fatalf("%d datagrams, want %d", len(got), len(want))
					}
					for i := range want {
						if !bytes.Equal(got[i], want[i]) {
							t.Fatalf("datagram %d: %d bytes of %d, want %d of %d", i, len(got[i]), got[i][0], len(want[i]), want[i][0])
						}
					}
					if d.packets.Load() != uint64(len(want)) || d.drops.Load() != 0 || d.delay.load().Counts == (Delay{}).Counts {
						t.Fatalf("counted %d sent, %d dropped, delay %v", d.packets.Load(), d.drops.Load(), d.delay.load())
					}
				}
				check(ra, a, da)
				check(rb, b, db)
			})
		}
	}
}

// TestSendBatchFull: a batch that fills goes out at once, and the next
// copies start a new one; nothing is lost or reordered.
func TestSendBatchFull(t *testing.T) {
	_, io := batchSender(t, "udp")
	q := newSendBatch(io)
	r := sink(t)
	p := pathTo(r)
	const n = 3*txSlots + 5
	for i := range n {
		queue(t, q, p, 100+i%7, byte(i), nil)
	}
	q.flush()
	got := readAll(t, r)
	if len(got) != n || io.calls.Load() != 4 {
		t.Fatalf("%d datagrams in %d calls, want %d in 4", len(got), io.calls.Load(), n)
	}
	for i, g := range got {
		if g[0] != byte(i) || len(g) != 100+i%7 {
			t.Fatalf("datagram %d is %d bytes of %d", i, len(g), g[0])
		}
	}
}

// TestSendBatchGSORefused: a socket whose kernel refuses segmented sends
// (here: SO_NO_CHECK, with which the kernel cannot segment) gets every
// datagram all the same, one by one, and GSO goes off for it.
func TestSendBatchGSORefused(t *testing.T) {
	c, io := batchSender(t, "udp4")
	rc, _ := c.SyscallConn()
	_ = rc.Control(func(fd uintptr) {
		if err := unix.SetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_NO_CHECK, 1); err != nil {
			t.Fatal(err)
		}
	})
	if !io.gso.Load() {
		t.Fatal("this kernel does not take UDP GSO")
	}
	q := newSendBatch(io)
	r := sink(t)
	p := pathTo(r)
	d := &DownTrack{}
	for i := range 5 {
		queue(t, q, p, 1000, byte(i), d)
	}
	q.flush()
	got := readAll(t, r)
	if len(got) != 5 || io.gso.Load() || io.gsoOff.Load() != 1 || d.packets.Load() != 5 {
		t.Fatalf("%d datagrams, gso %v (off %d times), %d counted sent", len(got), io.gso.Load(), io.gsoOff.Load(), d.packets.Load())
	}
	// The next batch does not group.
	for i := range 3 {
		queue(t, q, p, 1000, byte(i), d)
	}
	if q.m != 3 {
		t.Fatalf("%d messages for 3 datagrams after GSO went off", q.m)
	}
	q.flush()
	if got := readAll(t, r); len(got) != 3 {
		t.Fatalf("%d datagrams", len(got))
	}
}

// TestSendBatchBadAddress: a message the kernel refuses for its address
// is dropped and counted, the rest of the batch goes out, and GSO stays
// on (it was not the segmenting).
func TestSendBatchBadAddress(t *testing.T) {
	_, io := batchSender(t, "udp")
	q := newSendBatch(io)
	r := sink(t)
	good := pathTo(r)
	bad := &directPath{}
	bad.addr.Store(&net.UDPAddr{IP: net.IPv4(127, 0, 0, 1), Port: 0}) // the kernel refuses port 0
	dg, db := &DownTrack{}, &DownTrack{}
	queue(t, q, good, 800, 1, dg)
	queue(t, q, bad, 800, 2, db)
	queue(t, q, bad, 800, 3, db)
	queue(t, q, good, 900, 4, dg)
	q.flush()
	got := readAll(t, r)
	if len(got) != 2 || got[0][0] != 1 || got[1][0] != 4 {
		t.Fatalf("%d datagrams", len(got))
	}
	if !io.gso.Load() || db.drops.Load() != 2 || db.packets.Load() != 0 || dg.packets.Load() != 2 || io.errs.Load() != 2 {
		t.Fatalf("gso %v, bad: %d dropped %d sent, good: %d sent, errors %d", io.gso.Load(), db.drops.Load(), db.packets.Load(), dg.packets.Load(), io.errs.Load())
	}
	// The operator sees why: the kernel's error, by name.
	if c := io.errorCauses(); len(c) != 1 || c["EINVAL"] != 2 {
		t.Fatalf("causes %v, want EINVAL: 2", c)
	}
}

// TestSendBatchIPv6 sends to an IPv6 address from the dual-stack socket,
// and refuses one from an IPv4 socket, which cannot.
func TestSendBatchIPv6(t *testing.T) {
	r, err := net.ListenUDP("udp6", &net.UDPAddr{IP: net.IPv6loopback})
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	_, io := batchSender(t, "udp")
	q := newSendBatch(io)
	p := pathTo(r)
	queue(t, q, p, 300, 7, nil)
	q.flush()
	if got := readAll(t, r); len(got) != 1 || len(got[0]) != 300 {
		t.Fatalf("%d datagrams over IPv6", len(got))
	}
	_, io4 := batchSender(t, "udp4")
	q4 := newSendBatch(io4)
	q4.next()
	if err := q4.commit(p, p.addr.Load(), 300, txNote{}); err == nil || q4.pending() {
		t.Fatalf("an IPv4 socket took an IPv6 address: %v", err)
	}
}

// TestRxBatchReads: the reader's recvmmsg gets every datagram whole, in
// order, with its sender's address as Go's own read reports it.
func TestRxBatchReads(t *testing.T) {
	for _, network := range []string{"udp4", "udp"} {
		t.Run(network, func(t *testing.T) {
			c, io := batchSender(t, network)
			rx := newRxBatch(io)
			to := &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1), Port: c.LocalAddr().(*net.UDPAddr).Port}
			s1, s2 := sink(t), sink(t)
			const n = 2*rxSlots + 3
			for i := range n {
				s := s1
				if i%3 == 0 {
					s = s2
				}
				if _, err := s.WriteToUDP(bytes.Repeat([]byte{byte(i)}, 10+i), to); err != nil {
					t.Fatal(err)
				}
			}
			for i := 0; i < n; {
				if !rx.more() {
					if err := rx.fill(); err != nil {
						t.Fatal(err)
					}
					continue
				}
				b, from, _ := rx.take()
				want := s1.LocalAddr().(*net.UDPAddr).Port
				if i%3 == 0 {
					want = s2.LocalAddr().(*net.UDPAddr).Port
				}
				if len(b) != 10+i || b[0] != byte(i) || int(from.Port()) != want {
					t.Fatalf("datagram %d: %d bytes of %d from %v", i, len(b), b[0], from)
				}
				if network == "udp" && !from.Addr().Is4In6() || network == "udp4" && !from.Addr().Is4() {
					t.Fatalf("address %v on a %s socket", from, network)
				}
				i++
			}
			if io.reads.Load() < 3 || io.readPkts.Load() != n {
				t.Fatalf("%d datagrams in %d reads", io.readPkts.Load(), io.reads.Load())
			}
			// What Go's own read says the sender is.
			probe := []byte("probe")
			if _, err := s1.WriteToUDP(probe, to); err != nil {
				t.Fatal(err)
			}
			var from netip.AddrPort
			buf := make([]byte, 64)
			for !rx.more() {
				if err := rx.fill(); err != nil {
					t.Fatal(err)
				}
			}
			b, from, _ := rx.take()
			_ = c.SetReadDeadline(time.Now().Add(time.Second))
			if _, err := s1.WriteToUDP(probe, to); err != nil {
				t.Fatal(err)
			}
			_, goFrom, err := c.ReadFromUDPAddrPort(buf)
			if err != nil || !bytes.Equal(b, probe) || goFrom != from {
				t.Fatalf("batched read says %v, Go's %v (%v)", from, goFrom, err)
			}
		})
	}
}

// TestRxBatchArrival: a datagram that waited in the socket's queue is
// dated when the kernel received it, not when it was read, so that the
// forwarding delay and the publisher's feedback count the wait.
func TestRxBatchArrival(t *testing.T) {
	c, io := batchSender(t, "udp")
	rx := newRxBatch(io)
	s := sink(t)
	to := &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1), Port: c.LocalAddr().(*net.UDPAddr).Port}
	// The kernel turns receive stamping on a moment after the first
	// socket asks (a work queue); until then it dates a datagram when it
	// is read. So a few tries.
	var waited time.Duration
	for try := 0; try < 5 && waited < 90*time.Millisecond; try++ {
		sent := monoNow()
		if _, err := s.WriteToUDP([]byte("queued"), to); err != nil {
			t.Fatal(err)
		}
		time.Sleep(100 * time.Millisecond)
		if err := rx.fill(); err != nil || !rx.more() {
			t.Fatalf("read: %v", err)
		}
		_, _, at := rx.take()
		if waited = time.Duration(rx.readMono - at); at < sent || waited > 5*time.Second {
			t.Fatalf("dated %v before its read, sent %v before it", waited, time.Duration(rx.readMono-sent))
		}
	}
	if waited < 90*time.Millisecond {
		t.Fatalf("a datagram that waited 100ms is dated %v before its read", waited)
	}
	// A wall clock that stepped: never after the read, never more than
	// maxQueueWait before it.
	for _, c := range []struct{ wall, want int64 }{
		{wall: 1_000_500, want: 5000},
		{wall: 1_000_000 + int64(time.Hour), want: 5000},
		{wall: 1_000_000 - int64(time.Hour), want: 5000 - int64(maxQueueWait)},
		{wall: 999_000, want: 4000},
	} {
		if got := arrival(5000, 1_000_000, c.wall); got != c.want {
			t.Errorf("arrival(read at 5000, wall 1e6, stamp %d) = %d, want %d", c.wall, got, c.want)
		}
	}
}

// TestTapBatchedHandsOn: the tap reading with recvmmsg hands pion what is
// not the direct paths' (STUN, DTLS, unknown senders) whole and in order,
// with the sender's address.
func TestTapBatchedHandsOn(t *testing.T) {
	c, _ := batchSender(t, "udp")
	tap := newRTCPTap(c, c, true)
	if tap.rx == nil || tap.tx == nil {
		t.Fatal("the tap has no batched I/O on a UDP socket")
	}
	to := &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1), Port: c.LocalAddr().(*net.UDPAddr).Port}
	s := sink(t)
	for i := range 40 {
		b := bytes.Repeat([]byte{byte(i)}, 20+i) // first byte < 128: not RTP
		if _, err := s.WriteToUDP(b, to); err != nil {
			t.Fatal(err)
		}
	}
	buf := make([]byte, receiveMTU)
	for i := range 40 {
		n, from, err := tap.ReadFromAddrPort(buf)
		if err != nil {
			t.Fatal(err)
		}
		if n != 20+i || buf[0] != byte(i) || int(from.Port()) != s.LocalAddr().(*net.UDPAddr).Port {
			t.Fatalf("datagram %d: %d bytes of %d from %v", i, n, buf[0], from)
		}
	}
}

// TestBatchedForwardDoesNotAllocate: forwarding on the socket's reader
// into its batch (the rewrite, the stamp, SRTP, the batch with its GSO
// grouping, and its sendmmsg) allocates nothing per packet, and every copy
// goes out.
func TestBatchedForwardDoesNotAllocate(t *testing.T) {
	_, io := batchSender(t, "udp")
	q := newSendBatch(io)
	r := sink(t)
	tr := testTrack()
	tr.sid = "TR_batch"
	downs := directDowns(t, tr, nil, 10)
	for _, d := range downs {
		// a connection each, so that the batch's messages go to 10
		// destinations (all on the one sink)
		var p atomic.Pointer[directPath]
		p.Store(testDirectPath(t, nil))
		p.Load().addr.Store(r.LocalAddr().(*net.UDPAddr))
		d.path = &p
	}
	l := tr.layer(0)
	pkt := packet(1, 1, true, 1000)
	seq := uint16(1)
	step := func() {
		seq++
		pkt[2], pkt[3] = byte(seq>>8), byte(seq)
		l.forwardOn(pkt, 0, true, false, q)
		q.flush()
	}
	for range 2 * ringSize {
		step()
	}
	before := io.pkts.Load()
	var drained atomic.Int64
	go func() {
		buf := make([]byte, 2048)
		for {
			if _, err := r.Read(buf); err != nil {
				return
			}
			drained.Add(1)
		}
	}()
	if allocs := testing.AllocsPerRun(1000, step); allocs != 0 {
		t.Fatalf("%.1f allocations per forwarded packet, want 0", allocs)
	}
	if sent := io.pkts.Load() - before; sent < 1000*uint64(len(downs)) || io.errs.Load() != 0 {
		t.Fatalf("%d copies sent for 1001 packets to %d subscribers, %d errors", sent, len(downs), io.errs.Load())
	}
}

// BenchmarkSendLoopback compares writing each copy with its own sendto
// with batching them (16 to a sendmmsg), to 10 addresses on loopback whose
// sockets are drained: ns/pkt is the sender's time per datagram, the
// kernel's delivery into the receiving socket included (on loopback the
// sender pays it).
func BenchmarkSendLoopback(b *testing.B) {
	for _, mode := range []string{"sendto", "batch", "batch-gso"} {
		b.Run(mode, func(b *testing.B) {
			c, io := batchSender(b, "udp")
			io.gso.Store(mode == "batch-gso")
			q := newSendBatch(io)
			var paths []*directPath
			for range 10 {
				r := sink(b)
				paths = append(paths, pathTo(r))
				go func() {
					buf := make([]byte, 65536)
					for {
						if _, err := r.Read(buf); err != nil {
							return
						}
					}
				}()
			}
			payload := make([]byte, 1100)
			b.ResetTimer()
			for i := range b.N {
				// a burst of 4 packets of one stream to every address
				for k := range 4 {
					for _, p := range paths {
						if mode == "sendto" {
							_, _ = c.WriteTo(payload, p.addr.Load())
							continue
						}
						copy(q.next(), payload)
						_ = q.commit(p, p.addr.Load(), len(payload), txNote{})
						_ = k
					}
				}
				if mode != "sendto" {
					q.flush()
				}
				_ = i
			}
			b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N*40), "ns/pkt")
		})
	}
}

// TestBatchedHandOff: a publisher's packets written in place into the
// reader's batch, then handed to the layer's fan-out goroutine (crowded,
// whose own batch sends them), then in place again, reach every
// subscriber whole and in order, all through batches.
func TestBatchedHandOff(t *testing.T) {
	_, io := batchSender(t, "udp")
	l := newRecvLab(t)
	l.r.io = io
	r := sink(t)
	const subs = 4
	downs := directDowns(t, l.tr, nil, subs)
	downs[0].path.Load().addr.Store(r.LocalAddr().(*net.UDPAddr))
	l.r.adoptStreams(l.tr.layer(0), 1234, 0, 96)
	q := newSendBatch(io)
	for seq := uint16(1); seq <= 60; seq++ {
		crowded := seq > 20 && seq <= 40
		l.r.readRTP(l.seal(t, packet(seq, uint32(seq)*3000, true, 300)), monoNow(), crowded, q)
		if crowded && !waitFor(5*time.Second, func() bool { return l.tr.layer(0).fanning.Load() == 0 }) {
			t.Fatal("the fan-out goroutine did not write") // as fast as it can be
		}
		if seq%3 == 0 {
			q.flush() // the reader's read batch ends
		}
	}
	q.flush()
	if !waitFor(5*time.Second, func() bool { return l.tr.layer(0).fanning.Load() == 0 }) {
		t.Fatalf("%d packets still queued", l.tr.layer(0).fanning.Load())
	}
	got := readAll(t, r)
	if len(got) != 60*subs || io.pkts.Load() != 60*subs || l.tr.layer(0).fan == nil {
		t.Fatalf("%d datagrams, %d through batches, handed off %v", len(got), io.pkts.Load(), l.tr.layer(0).fan != nil)
	}
	next := map[uint32]uint16{}
	for _, b := range got {
		ssrc, seq := binary.BigEndian.Uint32(b[8:12]), binary.BigEndian.Uint16(b[2:4])
		if want, ok := next[ssrc]; ok && seq != want {
			t.Fatalf("ssrc %d: seq %d after %d", ssrc, seq, want-1)
		}
		next[ssrc] = seq + 1
	}
	if len(next) != subs {
		t.Fatalf("%d subscribers' streams", len(next))
	}
	l.tr.Close()
}

// TestHeldFanOutGroups: the packets of one read (a frame's five, the last
// shorter) are fanned out subscriber by subscriber when the reader sends,
// so each subscriber's copies sit side by side and go as one GSO message.
// Eight subscribers' 40 copies fill a batch of 16 twice and a half: 10
// messages (a subscriber's five are cut in two where a batch ends), where
// packet by packet every batch held two or three packets to eight
// subscribers: 24. Each subscriber's copies arrive whole and in order, on
// its own connection.
func TestHeldFanOutGroups(t *testing.T) {
	_, io := batchSender(t, "udp")
	if !io.gso.Load() {
		t.Fatal("the socket does not take UDP_SEGMENT") // every kernel since 4.18 does
	}
	l := newRecvLab(t)
	l.r.io = io
	const subs, frame = 8, 5
	sinks := make([]*net.UDPConn, subs)
	downs := directDowns(t, l.tr, nil, subs)
	for i, d := range downs {
		sinks[i] = sink(t)
		var p atomic.Pointer[directPath]
		p.Store(testDirectPath(t, nil))
		p.Load().addr.Store(sinks[i].LocalAddr().(*net.UDPAddr))
		d.path = &p
	}
	l.r.adoptStreams(l.tr.layer(0), 1234, 0, 96)
	q := newSendBatch(io)
	read := func(first uint16) {
		for seq := first; seq < first+frame; seq++ {
			size := 1000
			if seq == first+frame-1 {
				size = 400
			}
			if !l.r.readRTP(l.seal(t, packet(seq, uint32(first)*3000, seq == 1, size)), monoNow(), false, q) {
				t.Fatalf("packet %d not taken", seq)
			}
		}
		if io.calls.Load() != 0 && first == 1 {
			t.Fatal("the reader sent before its read was handled")
		}
		q.flush()
	}
	read(1)
	if c, m, p := io.calls.Load(), io.msgs.Load(), io.pkts.Load(); c != 3 || m != 10 || p != subs*frame {
		t.Fatalf("%d sendmmsg, %d messages, %d datagrams; want 3, 10, %d", c, m, p, subs*frame)
	}
	for i := range 3 {
		read(uint16(1 + frame*(i+1)))
	}
	for i, s := range sinks {
		got := readAll(t, s)
		if len(got) != 4*frame {
			t.Fatalf("subscriber %d: %d datagrams, want %d", i, len(got), 4*frame)
		}
		var prev uint16
		for j, b := range got {
			ssrc, seq := binary.BigEndian.Uint32(b[8:12]), binary.BigEndian.Uint16(b[2:4])
			if ssrc != uint32(i+1) || (j > 0 && seq != prev+1) {
				t.Fatalf("subscriber %d: ssrc %d seq %d after %d", i, ssrc, seq, prev)
			}
			prev = seq
		}
	}
	if m := io.msgs.Load(); m != 4*10 {
		t.Fatalf("%d messages for 4 reads to %d subscribers, want 40", m, subs)
	}
	l.tr.Close()
}

// TestOwnWriterSurvivesMuxAbort: pion's UDP mux aborts a closing
// connection's write by setting the socket's write deadline to now for a
// moment. Writes through the same handle fail meanwhile; Parley's, through
// ownWriter's handle, batched or not, still go out.
func TestOwnWriterSurvivesMuxAbort(t *testing.T) {
	c, err := net.ListenUDP("udp", &net.UDPAddr{})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	w, closeW := ownWriter(c)
	defer closeW()
	if w == net.PacketConn(c) {
		t.Fatal("no handle of its own")
	}
	if w.LocalAddr().String() != c.LocalAddr().String() {
		t.Fatalf("the handle is %v, the socket %v", w.LocalAddr(), c.LocalAddr())
	}
	r := sink(t)
	_ = c.SetWriteDeadline(time.Now()) // what ice.UDPMuxDefault.abortWrite does
	for _, own := range []bool{false, true} {
		h := net.PacketConn(c)
		if own {
			h = w
		}
		io := newUDPIO(c, h)
		q := newSendBatch(io)
		p := pathTo(r)
		queue(t, q, p, 500, 1, nil)
		queue(t, q, p, 500, 2, nil)
		q.flush()
		_, werr := h.WriteTo([]byte{3}, r.LocalAddr())
		if !own {
			if io.errs.Load() != 1 || io.errorCauses()["timeout"] != 1 || werr == nil {
				t.Fatalf("through the mux's handle: %d batch errors (%v), write error %v; want both to fail", io.errs.Load(), io.errorCauses(), werr)
			}
			continue
		}
		if io.errs.Load() != 0 || io.pkts.Load() != 2 || werr != nil {
			t.Fatalf("through its own handle: %d errors, %d sent, write error %v", io.errs.Load(), io.pkts.Load(), werr)
		}
		if got := readAll(t, r); len(got) != 3 {
			t.Fatalf("%d datagrams arrived, want 3", len(got))
		}
	}
	// Reads are the socket's: a datagram to it is read through c.
	if _, err := r.WriteTo([]byte("in"), &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1), Port: c.LocalAddr().(*net.UDPAddr).Port}); err != nil {
		t.Fatal(err)
	}
	_ = c.SetReadDeadline(time.Now().Add(time.Second))
	buf := make([]byte, 16)
	if n, _, err := c.ReadFrom(buf); err != nil || string(buf[:n]) != "in" {
		t.Fatalf("read %q, %v", buf[:n], err)
	}
}
