package sfu

import (
	"errors"
	"net"
	"net/netip"
	"time"

	"golang.org/x/sys/unix"
)

// txSlot is one encrypted copy waiting in a batch.
type txSlot struct {
	buf  [packetMTU + 64]byte // room for SRTP's tag
	len  int
	next int // the next slot of its message; -1: the last
	note txNote
}

// txMsg is one message of a batch: a datagram, or with GSO several of one
// size (the last may be shorter) to one address.
type txMsg struct {
	first, last int // slots
	segs        int
	size        int // the segment size: the first slot's length
	bytes       int
	closed      bool // its last segment is shorter: nothing more joins
	sa          *sockaddr
}

// destAddr is a path's address as the kernel takes it; ok: the socket
// can send to it.
type destAddr struct {
	io *udpIO
	a  *net.UDPAddr
	sa sockaddr
	ok bool
}

// dest is p's address a as the kernel takes it, worked out once per
// address.
func (io *udpIO) dest(p *directPath, a *net.UDPAddr) *destAddr {
	if d := p.dst.Load(); d != nil && d.a == a && d.io == io {
		return d
	}
	d := &destAddr{io: io, a: a}
	d.ok = io.setSockaddr(&d.sa, a)
	p.dst.Store(d)
	return d
}

// txKey is a destination: a direct path at one address (a new ICE pair
// is a new address).
type txKey struct {
	p *directPath
	a *net.UDPAddr
}

// sendBatch is one goroutine's copies not yet handed to the kernel. Only
// its goroutine uses it.
type sendBatch struct {
	io    *udpIO
	call  *mmsgCall
	gso   bool // this batch groups into GSO messages
	slots [txSlots]txSlot
	msgs  [txSlots]txMsg
	n, m  int // slots, messages used
	open  map[txKey]int
	hdrs  [txSlots]mmsghdr
	iov   [txSlots]unix.Iovec
	oob   [txSlots][gsoCmsgLen]byte

	apart    [1]mmsghdr // sendApart's
	apartIov [1]unix.Iovec

	held held // fan-outs to make before the next send
}

// newSendBatch is a batch on io, or nil without one.
func newSendBatch(io *udpIO) *sendBatch {
	if io == nil {
		return nil
	}
	return &sendBatch{io: io, call: newMMsgCall(), gso: io.gso.Load(), open: make(map[txKey]int, txSlots)}
}

// next is the buffer of the next copy, sending the batch first when full.
func (q *sendBatch) next() []byte {
	if q.n == len(q.slots) {
		q.send()
	}
	return q.slots[q.n].buf[:]
}

// commit queues the first n bytes of next's buffer to a, for path p: as
// one more segment of the open GSO message to that destination when it
// can take it, else as a message of its own.
func (q *sendBatch) commit(p *directPath, a *net.UDPAddr, n int, note txNote) error {
	i := q.n
	k := txKey{p, a}
	m := q.joinable(k, n)
	if m == nil {
		d := q.io.dest(p, a)
		if !d.ok {
			return errNoDirectPair
		}
		m = &q.msgs[q.m]
		*m = txMsg{first: i, size: n, sa: &d.sa}
		if q.gso {
			q.open[k] = q.m
		}
		q.m++
	} else {
		q.slots[m.last].next = i
	}
	q.slots[i].len, q.slots[i].next, q.slots[i].note = n, -1, note
	q.n++
	m.last = i
	m.segs++
	m.bytes += n
	m.closed = n < m.size || n > gsoMaxSegment
	return nil
}

// joinable is the open GSO message to k that a segment of n bytes may
// join, or nil.
func (q *sendBatch) joinable(k txKey, n int) *txMsg {
	if !q.gso || n > gsoMaxSegment {
		return nil
	}
	j, ok := q.open[k]
	if !ok {
		return nil
	}
	m := &q.msgs[j]
	if m.closed || n > m.size || m.segs >= maxSegments || m.bytes+n > maxGSOBytes {
		return nil
	}
	return m
}

// hold keeps packet num of l for its fan-out at the next flush; a full
// list is fanned out at once.
func (q *sendBatch) hold(l *Layer, num uint64) {
	if q.held.n == heldSlots {
		runHeld(q.held.take(), q, l)
	}
	q.held.l[q.held.n], q.held.num[q.held.n] = l, num
	q.held.n++
}

// holds reports whether a packet of l is held: l's next packets must be
// too, to keep their order.
func (q *sendBatch) holds(l *Layer) bool {
	for _, h := range q.held.l[:q.held.n] {
		if h == l {
			return true
		}
	}
	return false
}

// pending reports whether copies, or held fan-outs, wait.
func (q *sendBatch) pending() bool { return q.m > 0 || q.held.n > 0 }

// flush makes the held fan-outs and hands every waiting copy to the
// kernel.
func (q *sendBatch) flush() { q.flushLocked(nil) }

// flushLocked is flush by a caller that holds l's fmu.
func (q *sendBatch) flushLocked(l *Layer) {
	if q.held.n > 0 {
		runHeld(q.held.take(), q, l)
	}
	q.send()
}

// send hands every waiting copy to the kernel: one sendmmsg, more when
// the kernel takes part (the socket's buffer) or refuses a message (an
// unreachable address: that message is dropped; GSO refused: GSO goes off
// for the socket and the message goes out datagram by datagram).
func (q *sendBatch) send() {
	if q.m == 0 {
		return
	}
	v := 0
	for j := range q.m {
		m := &q.msgs[j]
		start := v
		for s := m.first; s >= 0; s = q.slots[s].next {
			setIov(&q.iov[v], q.slots[s].buf[:q.slots[s].len])
			v++
		}
		var oob []byte
		if m.segs > 1 {
			putGSOCmsg(q.oob[j][:], uint16(m.size))
			oob = q.oob[j][:]
		}
		setMsg(&q.hdrs[j], q.iov[start:v], m.sa, oob)
	}
	for done := 0; done < q.m; {
		n, err := q.io.sendmmsg(q.call, q.hdrs[done:q.m])
		q.io.calls.Add(1)
		if n > 0 {
			q.account(done, done+n, true)
			done += n
			continue
		}
		switch {
		case errors.Is(err, net.ErrClosed):
			q.account(done, q.m, false)
			done = q.m
		case q.msgs[done].segs > 1 && isGSOError(err):
			// The kernel refused the segmented send. If the datagrams go
			// out one by one, it was the segmenting (a device that cannot
			// checksum): GSO goes off for the socket. If not, it was the
			// address, and GSO stays.
			if q.sendApart(done) > 0 && q.io.gso.Swap(false) {
				q.io.gsoOff.Add(1)
			}
			done++
		default:
			q.io.failed(err)
			q.account(done, done+1, false)
			done++
		}
	}
	if q.gso {
		clear(q.open)
	}
	for i := range q.n {
		q.slots[i].note = txNote{}
	}
	for j := range q.m {
		q.msgs[j].sa = nil
	}
	q.n, q.m = 0, 0
	q.gso = q.io.gso.Load()
}

// account counts messages [from, to) as sent or dropped.
func (q *sendBatch) account(from, to int, sent bool) {
	now := monoNow()
	for j := from; j < to; j++ {
		m := &q.msgs[j]
		if sent {
			q.io.msgs.Add(1)
			q.io.pkts.Add(uint64(m.segs))
		}
		for s := m.first; s >= 0; s = q.slots[s].next {
			nt := &q.slots[s].note
			if nt.d == nil {
				continue
			}
			if sent {
				nt.d.sent(now, nt.at, nt.n, nt.octets)
			} else {
				nt.d.drops.Add(1)
			}
		}
	}
}

// sendApart sends message j's segments as datagrams of their own: how
// many went.
func (q *sendBatch) sendApart(j int) (sent int) {
	m := &q.msgs[j]
	for s := m.first; s >= 0; s = q.slots[s].next {
		sl := &q.slots[s]
		setIov(&q.apartIov[0], sl.buf[:sl.len])
		setMsg(&q.apart[0], q.apartIov[:], m.sa, nil)
		n, err := q.io.sendmmsg(q.call, q.apart[:])
		q.io.calls.Add(1)
		if n == 1 {
			sent++
			q.io.msgs.Add(1)
			q.io.pkts.Add(1)
		} else {
			q.io.failed(err)
		}
		switch d := sl.note.d; {
		case d == nil:
		case n == 1:
			d.sent(monoNow(), sl.note.at, sl.note.n, sl.note.octets)
		default:
			d.drops.Add(1)
		}
	}
	return sent
}

// rxBatch is the reader's datagrams from one recvmmsg. Only the reader
// uses it.
//
// Each datagram comes with the time the kernel received it
// (SO_TIMESTAMPNS), so that a datagram that waited in the socket's queue,
// or in the batch while the ones before it were forwarded, is not taken
// as just arrived: the forwarding delay counts from its arrival, and the
// publisher's transport-wide feedback gives its real arrival time.
type rxBatch struct {
	io    *udpIO
	call  *mmsgCall
	n, i  int // datagrams read, handled
	hdrs  [rxSlots]mmsghdr
	iov   [rxSlots]unix.Iovec
	names [rxSlots]unix.RawSockaddrInet6
	oob   [rxSlots][stampCmsgLen]byte
	bufs  [rxSlots][rxSlotLen]byte

	readMono, readWall int64 // when the last read returned: monoNow, and Unix ns
}

// rxSlotLen is the largest datagram read whole: pion's mux reads as much.
const rxSlotLen = 8192

func newRxBatch(io *udpIO) *rxBatch {
	if io == nil {
		return nil
	}
	io.stampRx()
	r := &rxBatch{io: io, call: newMMsgCall()}
	for i := range r.hdrs {
		setRecv(&r.hdrs[i], &r.iov[i], r.bufs[i][:], &r.names[i], r.oob[i][:])
	}
	return r
}

// fill reads the next datagrams, waiting for the first.
func (r *rxBatch) fill() error {
	for i := range r.n {
		setRecv(&r.hdrs[i], &r.iov[i], r.bufs[i][:], &r.names[i], r.oob[i][:])
	}
	n, err := r.io.recvmmsg(r.call, r.hdrs[:])
	now := time.Now() // one clock read for both
	r.readMono, r.readWall = int64(now.Sub(monoBase)), now.UnixNano()
	r.n, r.i = n, 0
	r.io.reads.Add(1)
	r.io.readPkts.Add(uint64(n))
	return err
}

// more reports whether a datagram of the last read is not yet handled.
func (r *rxBatch) more() bool { return r.i < r.n }

// take is the next datagram of the last read, its sender, and when it
// arrived (monoNow's clock).
func (r *rxBatch) take() ([]byte, netip.AddrPort, int64) {
	i := r.i
	r.i++
	at := r.readMono
	if wall, ok := rxStamp(&r.hdrs[i].hdr); ok {
		at = arrival(r.readMono, r.readWall, wall)
	}
	return r.bufs[i][:min(int(r.hdrs[i].n), rxSlotLen)], addrPort(&r.names[i]), at
}

// arrival is when a datagram the kernel stamped wall (Unix ns) arrived,
// on monoNow's clock, from a read that returned at mono and wall readWall.
// The wall clock may step: a stamp after the read, or more than
// maxQueueWait before it, is taken as the read's time, or that long
// before it.
func arrival(mono, readWall, wall int64) int64 {
	wait := readWall - wall
	switch {
	case wait < 0:
		wait = 0
	case wait > int64(maxQueueWait):
		wait = int64(maxQueueWait)
	}
	return mono - wait
}

// maxQueueWait is the longest a datagram is taken to have waited in the
// socket's queue.
const maxQueueWait = 10 * time.Second
