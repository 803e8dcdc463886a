package sfu

import (
	"bytes"
	"fmt"
	"net"
	"net/netip"
	"strings"
	"testing"
	"time"

	"golang.org/x/net/ipv4"
	"golang.org/x/sys/unix"
)

// TestBatchConnDeliversEveryPacket: packets written from many goroutines
// through the batching socket all arrive, intact, to IPv4 and (when the
// machine has it) IPv6 loopback.
func TestBatchConnDeliversEveryPacket(t *testing.T) {
	for _, network := range []string{"udp4", "udp"} {
		t.Run(network, func(t *testing.T) {
			laddr := &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)}
			if network == "udp" {
				laddr = &net.UDPAddr{} // dual stack, as the engine opens it
			}
			uc, err := net.ListenUDP(network, laddr)
			if err != nil {
				t.Fatal(err)
			}
			b := newBatchConn(uc)
			defer b.Close()
			sink, err := net.ListenUDP("udp4", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
			if err != nil {
				t.Fatal(err)
			}
			defer sink.Close()
			_ = sink.SetReadBuffer(8 << 20)
			to := sink.LocalAddr().(*net.UDPAddr).AddrPort()
			const writers, each = 8, 200
			done := make(chan struct{})
			for w := 0; w < writers; w++ {
				go func() {
					defer func() { done <- struct{}{} }()
					for i := 0; i < each; i++ {
						p := []byte(fmt.Sprintf("w%d-%04d-%s", w, i, bytes.Repeat([]byte{'x'}, 900)))
						if n, err := b.WriteToAddrPort(p, to); err != nil || n != len(p) {
							t.Errorf("write: %d %v", n, err)
							return
						}
					}
				}()
			}
			for w := 0; w < writers; w++ {
				<-done
			}
			seen := map[string]bool{}
			buf := make([]byte, 2000)
			_ = sink.SetReadDeadline(time.Now().Add(5 * time.Second))
			for len(seen) < writers*each {
				n, err := sink.Read(buf)
				if err != nil {
					t.Fatalf("got %d of %d packets: %v", len(seen), writers*each, err)
				}
				if n != 908 || !bytes.HasSuffix(buf[:n], bytes.Repeat([]byte{'x'}, 900)) {
					t.Fatalf("torn packet of %d bytes", n)
				}
				seen[string(buf[:8])] = true
			}
			if b.calls.Load() >= b.packets.Load() && b.packets.Load() > 0 {
				t.Logf("no batching happened: %d calls for %d packets", b.calls.Load(), b.packets.Load())
			}
			t.Logf("%d packets in %d sendmmsg calls", b.packets.Load(), b.calls.Load())
		})
	}
}

// queue puts packets of the given sizes and destinations into a batch, the
// first byte of each its index.
func queueBatch(t *testing.T, q *batch, pkts ...struct {
	to   netip.AddrPort
	size int
}) {
	t.Helper()
	for i, p := range pkts {
		q.msgs[i].Buffers[0] = q.bufs[i][:p.size]
		q.bufs[i][0] = byte(i)
		q.lens[i] = p.size
		q.aps[i] = p.to
		q.n++
	}
}

type pk = struct {
	to   netip.AddrPort
	size int
}

// groups describes q.out as the packet indexes of each message.
func groups(q *batch) string {
	var b strings.Builder
	for i, m := range q.out {
		if i > 0 {
			b.WriteString(" ")
		}
		for j, buf := range m.Buffers {
			if j > 0 {
				b.WriteString(",")
			}
			fmt.Fprintf(&b, "%d", buf[0])
		}
		if q.count[i] != len(m.Buffers) || (len(m.Buffers) > 1) != (m.OOB != nil) {
			fmt.Fprintf(&b, "(count %d, oob %v)", q.count[i], m.OOB != nil)
		}
	}
	return b.String()
}

// TestBatchGroupsForGSO: the packets to one address are gathered into
// messages of one segment size, in their order; a shorter packet ends a
// message, a longer one starts the next; other addresses' packets in
// between do not matter; the kernel's limits (64 segments, 64 KiB) hold.
func TestBatchGroupsForGSO(t *testing.T) {
	a := netip.MustParseAddrPort("127.0.0.1:1000")
	b := netip.MustParseAddrPort("127.0.0.1:1001")
	c := netip.MustParseAddrPort("[::1]:1000")
	for _, tc := range []struct {
		name string
		pkts []pk
		want string
	}{
		{"interleaved", []pk{{a, 1000}, {b, 1000}, {a, 1000}, {a, 500}, {a, 1000}, {b, 1000}, {c, 300}}, "0,2,3 1,5 4 6"},
		{"longer starts anew", []pk{{a, 500}, {a, 1000}, {a, 500}, {a, 500}}, "0 1,2 3"},
		{"one each", []pk{{a, 100}, {b, 100}, {c, 100}}, "0 1 2"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			q := newBatch()
			queueBatch(t, q, tc.pkts...)
			q.group(true)
			if got := groups(q); got != tc.want {
				t.Fatalf("messages %q, want %q", got, tc.want)
			}
			q.group(false)
			if len(q.out) != len(tc.pkts) {
				t.Fatalf("without GSO: %d messages for %d packets", len(q.out), len(tc.pkts))
			}
		})
	}
	t.Run("limits", func(t *testing.T) {
		q := newBatch()
		var pkts []pk
		for range batchSize {
			pkts = append(pkts, pk{a, 1100})
		}
		queueBatch(t, q, pkts...)
		q.group(true)
		if len(q.out) != 2 || len(q.out[0].Buffers) != maxGSOBytes/1100 || q.count[1] != batchSize-maxGSOBytes/1100 {
			t.Fatalf("64 packets of 1100 bytes: %d messages, first of %d", len(q.out), len(q.out[0].Buffers))
		}
		q = newBatch()
		pkts = pkts[:0]
		for range batchSize {
			pkts = append(pkts, pk{a, 100})
		}
		queueBatch(t, q, pkts...)
		q.group(true)
		if len(q.out) != 1 || q.count[0] != maxSegments {
			t.Fatalf("64 packets of 100 bytes: %d messages", len(q.out))
		}
	})
	if gsoCmsgLen < unix.CmsgSpace(2) {
		t.Fatalf("gsoCmsgLen %d < %d", gsoCmsgLen, unix.CmsgSpace(2))
	}
}

// TestBatchSendGSO sends one batch through a real socket: with UDP GSO
// (this machine's kernel has it), a burst of packets to one address is one
// message, and the receiver still gets every packet, whole and in order.
// A kernel that refuses GSO turns it off and loses nothing.
func TestBatchSendGSO(t *testing.T) {
	for _, refuse := range []bool{false, true} {
		t.Run(fmt.Sprintf("refused=%v", refuse), func(t *testing.T) {
			uc, err := net.ListenUDP("udp", &net.UDPAddr{})
			if err != nil {
				t.Fatal(err)
			}
			defer uc.Close()
			b := newBatchQueue(uc)
			if !b.gso.Load() {
				t.Fatal("this kernel should take UDP_SEGMENT (Linux 4.18 or later)")
			}
			if refuse {
				b.w = gsoRefuser{b.w}
			}
			var sinks []*net.UDPConn
			for range 2 {
				s, err := net.ListenUDP("udp4", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
				if err != nil {
					t.Fatal(err)
				}
				defer s.Close()
				sinks = append(sinks, s)
			}
			// A frame of 5 packets (the last shorter) to each sink, alternating.
			var want [2][]string
			for i := range 10 {
				to := sinks[i%2].LocalAddr().(*net.UDPAddr).AddrPort()
				size := 1000
				if i >= 8 {
					size = 321
				}
				p := bytes.Repeat([]byte{byte('a' + i)}, size)
				want[i%2] = append(want[i%2], string(p))
				if _, err := b.WriteToAddrPort(p, to); err != nil {
					t.Fatal(err)
				}
			}
			b.send(b.cur)
			if got := b.packets.Load(); got != 10 {
				t.Fatalf("sent %d packets of 10", got)
			}
			if !refuse && b.msgsSent.Load() != 2 {
				t.Fatalf("%d messages for two bursts", b.msgsSent.Load())
			}
			if refuse && (b.gso.Load() || b.gsoOff.Load() != 1) {
				t.Fatalf("GSO still on after the kernel refused it")
			}
			buf := make([]byte, 2000)
			for k, s := range sinks {
				_ = s.SetReadDeadline(time.Now().Add(2 * time.Second))
				for i, w := range want[k] {
					n, err := s.Read(buf)
					if err != nil {
						t.Fatalf("sink %d: got %d of %d packets: %v", k, i, len(want[k]), err)
					}
					if string(buf[:n]) != w {
						t.Fatalf("sink %d packet %d: %d bytes of %q, want %d of %q", k, i, n, buf[0], len(w), w[0])
					}
				}
			}
		})
	}
}

// gsoRefuser fails every message that carries a UDP_SEGMENT option, as a
// kernel whose device cannot checksum does.
type gsoRefuser struct{ w batchWriter }

func (r gsoRefuser) WriteBatch(ms []ipv4.Message, flags int) (int, error) {
	for i, m := range ms {
		if m.OOB != nil {
			if i == 0 {
				return 0, unix.EIO
			}
			n, err := r.w.WriteBatch(ms[:i], flags)
			return n, err
		}
	}
	return r.w.WriteBatch(ms, flags)
}

// TestBatchSendDoesNotAllocate: queueing and sending a burst, grouped for
// GSO, allocates nothing (make benchcheck runs it without -race, where the
// count is exact).
func TestBatchSendDoesNotAllocate(t *testing.T) {
	uc, err := net.ListenUDP("udp", &net.UDPAddr{})
	if err != nil {
		t.Fatal(err)
	}
	defer uc.Close()
	sink, err := net.ListenUDP("udp4", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	defer sink.Close()
	b := newBatchQueue(uc)
	to := sink.LocalAddr().(*net.UDPAddr).AddrPort()
	p := make([]byte, 1000)
	allocs := testing.AllocsPerRun(200, func() {
		for range 10 {
			_, _ = b.WriteToAddrPort(p, to)
		}
		b.send(b.cur)
	})
	if allocs != 0 && (!raceOn || allocs > 1) {
		t.Fatalf("%.1f allocations per burst", allocs)
	}
	if b.msgsSent.Load() >= b.packets.Load() {
		t.Fatalf("%d messages for %d packets: nothing was grouped", b.msgsSent.Load(), b.packets.Load())
	}
}
