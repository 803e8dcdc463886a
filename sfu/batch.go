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

// batch is one buffer of queued packets; two of them alternate.
type batch struct {
	n     int
	bufs  [batchSize][packetMTU]byte
	addrs [batchSize]net.UDPAddr
	ips   [batchSize][16]byte
	msgs  []ipv4.Message // ipv4.Message and ipv6.Message are the same type
}

func newBatch() *batch {
	b := &batch{msgs: make([]ipv4.Message, batchSize)}
	for i := range b.msgs {
		b.msgs[i].Buffers = [][]byte{nil}
		b.addrs[i].IP = b.ips[i][:]
		b.msgs[i].Addr = &b.addrs[i]
	}
	return b
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

	calls, packets, errors atomic.Uint64
}

func newBatchConn(c *net.UDPConn) *batchConn {
	b := &batchConn{UDPConn: c, cur: newBatch(), spare: newBatch(), wake: make(chan struct{}, 1), closed: make(chan struct{})}
	if la, ok := c.LocalAddr().(*net.UDPAddr); ok && la.IP.To4() != nil {
		b.w = ipv4.NewPacketConn(c)
	} else {
		b.w = ipv6WriteBatch{ipv6.NewPacketConn(c)}
	}
	go b.flushLoop()
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
	a := &q.addrs[i]
	ip := addr.Addr().Unmap()
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

// send writes every packet of q, one sendmmsg per batchSize, skipping a
// packet the kernel refuses (e.g. an unreachable address).
func (b *batchConn) send(q *batch) {
	msgs := q.msgs[:q.n]
	for len(msgs) > 0 {
		n, err := b.w.WriteBatch(msgs, 0)
		b.calls.Add(1)
		if n > 0 {
			b.packets.Add(uint64(n))
			msgs = msgs[n:]
		}
		if err != nil || n == 0 {
			select {
			case <-b.closed:
				q.n = 0
				return
			default:
			}
			b.errors.Add(1)
			if len(msgs) > 0 {
				msgs = msgs[1:]
			}
		}
	}
	q.n = 0
}
