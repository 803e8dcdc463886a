package sfu

import (
	"net"
	"net/netip"
	"sync"
	"sync/atomic"

	"golang.org/x/net/ipv4"
	"golang.org/x/net/ipv6"
)

// batchSize is the most packets one sendmmsg system call carries.
const batchSize = 64

// maxSegments is the most packets one UDP GSO send carries (the kernel's
// UDP_MAX_SEGMENTS), and maxGSOBytes the most bytes.
const (
	maxSegments = 64
	maxGSOBytes = 65000
)

// batch is one buffer of queued packets; two of them alternate.
type batch struct {
	n     int
	bufs  [batchSize][packetMTU]byte
	lens  [batchSize]int
	addrs [batchSize]net.UDPAddr
	aps   [batchSize]netip.AddrPort
	ips   [batchSize][16]byte
	msgs  []ipv4.Message // ipv4.Message and ipv6.Message are the same type

	// what send hands the kernel: with GSO, each message carries the
	// consecutive packets to one address of one size (the last may be
	// shorter) as one buffer list
	used  [batchSize]bool
	iov   [batchSize][]byte
	oob   [batchSize][gsoCmsgLen]byte
	out   []ipv4.Message
	count [batchSize]int // packets in out[i]
}

func newBatch() *batch {
	b := &batch{msgs: make([]ipv4.Message, batchSize), out: make([]ipv4.Message, 0, batchSize)}
	for i := range b.msgs {
		b.msgs[i].Buffers = [][]byte{nil}
		b.addrs[i].IP = b.ips[i][:]
		b.msgs[i].Addr = &b.addrs[i]
	}
	return b
}

// group fills q.out: without gso one message per packet; with it, the
// packets to one address are gathered, in their order, into messages of
// equal-size segments, each ending at the first packet of another size
// (a shorter one is its last segment). Packets to one address stay in
// order: a message ends where the next packet to its address cannot join.
func (q *batch) group(gso bool) {
	q.out = q.out[:0]
	if !gso {
		for i := 0; i < q.n; i++ {
			q.out = append(q.out, q.msgs[i])
			q.count[len(q.out)-1] = 1
		}
		return
	}
	clear(q.used[:q.n])
	iov := 0
	for i := 0; i < q.n; i++ {
		if q.used[i] {
			continue
		}
		start := iov
		size, total := q.lens[i], q.lens[i]
		q.iov[iov] = q.msgs[i].Buffers[0]
		iov++
		q.used[i] = true
		if size < packetMTU {
			for j := i + 1; j < q.n && iov-start < maxSegments; j++ {
				if q.used[j] || q.aps[j] != q.aps[i] {
					continue
				}
				if q.lens[j] > size || total+q.lens[j] > maxGSOBytes {
					break
				}
				q.iov[iov] = q.msgs[j].Buffers[0]
				iov++
				q.used[j] = true
				total += q.lens[j]
				if q.lens[j] < size {
					break
				}
			}
		}
		k := len(q.out)
		q.out = append(q.out, ipv4.Message{Buffers: q.iov[start:iov:iov], Addr: q.msgs[i].Addr})
		q.count[k] = iov - start
		if iov-start > 1 {
			putGSOCmsg(q.oob[k][:], uint16(size))
			q.out[k].OOB = q.oob[k][:]
		}
	}
}

// batchWriter is what sends a batch: ipv4 or ipv6 PacketConn.
type batchWriter interface {
	WriteBatch(ms []ipv4.Message, flags int) (int, error)
}

// batchConn is the media UDP socket with batched sends: the many
// goroutines that write packets (one per subscriber track) copy theirs into
// a queue and return; one goroutine sends whatever queued while it was in
// its previous system call, with sendmmsg. An idle socket sends a packet
// at once; a busy one makes one system call per burst instead of one per
// packet. Reads go to the socket directly.
type batchConn struct {
	*net.UDPConn
	w      batchWriter
	mu     sync.Mutex
	cur    *batch // being filled (mu)
	spare  *batch // being sent (flusher)
	wake   chan struct{}
	closed chan struct{}
	once   sync.Once

	// gso: the socket takes UDP_SEGMENT; cleared when the kernel
	// refuses it
	gso atomic.Bool

	calls, packets, errors, gsoOff, msgsSent atomic.Uint64
}

func newBatchConn(c *net.UDPConn) *batchConn {
	b := newBatchQueue(c)
	go b.flushLoop()
	return b
}

// newBatchQueue is a batchConn without its flusher (tests call send).
func newBatchQueue(c *net.UDPConn) *batchConn {
	b := &batchConn{UDPConn: c, cur: newBatch(), spare: newBatch(), wake: make(chan struct{}, 1), closed: make(chan struct{})}
	if la, ok := c.LocalAddr().(*net.UDPAddr); ok && la.IP.To4() != nil {
		b.w = ipv4.NewPacketConn(c)
	} else {
		b.w = ipv6WriteBatch{ipv6.NewPacketConn(c)}
	}
	b.gso.Store(gsoSupported(c))
	return b
}

type ipv6WriteBatch struct{ c *ipv6.PacketConn }

func (w ipv6WriteBatch) WriteBatch(ms []ipv4.Message, flags int) (int, error) {
	return w.c.WriteBatch(ms, flags)
}

// WriteToAddrPort queues one packet (ice.AddrPortReaderWriter).
func (b *batchConn) WriteToAddrPort(p []byte, addr netip.AddrPort) (int, error) {
	if len(p) > packetMTU {
		return b.UDPConn.WriteToUDPAddrPort(p, addr)
	}
	b.mu.Lock()
	q := b.cur
	if q.n == batchSize {
		// The flusher is behind: send this one ourselves rather than wait.
		b.mu.Unlock()
		return b.UDPConn.WriteToUDPAddrPort(p, addr)
	}
	i := q.n
	q.n++
	m := &q.msgs[i]
	m.Buffers[0] = q.bufs[i][:copy(q.bufs[i][:], p)]
	q.lens[i] = len(p)
	a := &q.addrs[i]
	ip := addr.Addr().Unmap()
	q.aps[i] = netip.AddrPortFrom(ip, addr.Port())
	if ip.Is4() {
		v4 := ip.As4()
		a.IP = q.ips[i][:4]
		copy(a.IP, v4[:])
	} else {
		v6 := ip.As16()
		a.IP = q.ips[i][:16]
		copy(a.IP, v6[:])
	}
	a.Port = int(addr.Port())
	a.Zone = ""
	b.mu.Unlock()
	select {
	case b.wake <- struct{}{}:
	default:
	}
	return len(p), nil
}

// ReadFromAddrPort reads one packet (ice.AddrPortReaderWriter).
func (b *batchConn) ReadFromAddrPort(p []byte) (int, netip.AddrPort, error) {
	return b.UDPConn.ReadFromUDPAddrPort(p)
}

// WriteTo queues a packet for a *net.UDPAddr; other addresses go out at
// once.
func (b *batchConn) WriteTo(p []byte, addr net.Addr) (int, error) {
	if ua, ok := addr.(*net.UDPAddr); ok {
		return b.WriteToAddrPort(p, ua.AddrPort())
	}
	return b.UDPConn.WriteTo(p, addr)
}

// Close stops the flusher and closes the socket.
func (b *batchConn) Close() error {
	b.once.Do(func() { close(b.closed) })
	return b.UDPConn.Close()
}

func (b *batchConn) flushLoop() {
	for {
		select {
		case <-b.closed:
			return
		case <-b.wake:
		}
		for {
			b.mu.Lock()
			q := b.cur
			if q.n == 0 {
				b.mu.Unlock()
				break
			}
			b.cur, b.spare = b.spare, q
			b.mu.Unlock()
			b.send(q)
		}
	}
}

// send writes every packet of q with one sendmmsg, its packets to one
// address gathered into GSO messages where the socket can, skipping a
// message the kernel refuses (e.g. an unreachable address). A refused GSO
// message turns GSO off for the socket and is sent again without it.
func (b *batchConn) send(q *batch) {
	q.group(b.gso.Load())
	msgs := q.out
	counts := q.count[:len(msgs)]
	for len(msgs) > 0 {
		n, err := b.w.WriteBatch(msgs, 0)
		b.calls.Add(1)
		if n > 0 {
			b.msgsSent.Add(uint64(n))
			for _, c := range counts[:n] {
				b.packets.Add(uint64(c))
			}
			msgs, counts = msgs[n:], counts[n:]
		}
		if err != nil || n == 0 {
			select {
			case <-b.closed:
				q.n = 0
				return
			default:
			}
			if len(msgs) == 0 {
				continue
			}
			if counts[0] > 1 && isGSOError(err) {
				// This socket cannot segment (e.g. no checksum offload on
				// its device): from now on, one datagram per packet, and
				// what is grouped already goes out one by one.
				if b.gso.Swap(false) {
					b.gsoOff.Add(1)
				}
				m := msgs[0]
				for _, buf := range m.Buffers {
					one := [1]ipv4.Message{{Buffers: [][]byte{buf}, Addr: m.Addr}}
					if k, _ := b.w.WriteBatch(one[:], 0); k == 1 {
						b.packets.Add(1)
					}
				}
				msgs, counts = msgs[1:], counts[1:]
				continue
			}
			b.errors.Add(1)
			msgs, counts = msgs[1:], counts[1:]
		}
	}
	q.n = 0
}
