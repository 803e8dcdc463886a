package sfu

// Batched socket I/O (rtc.batch_send). On this kind of server most of the
// CPU a forwarded packet costs is the kernel's: one sendto system call per
// copy, each walking the UDP and IP stack on its own. The goroutines that
// forward (the media socket's reader, and the layers' fan-out goroutines
// when it hands off) therefore do not write each copy as they make it:
// they encrypt it into a slot of their own batch, and the batch goes to
// the kernel with one sendmmsg when the goroutine has nothing more to do
// at once (the reader: when every datagram of its last recvmmsg is
// handled, or before it hands one to pion; a fan-out goroutine: when its
// queue is empty) or the batch is full. The copies of one burst to one
// address, of one size (the last may be shorter), go as one UDP GSO
// message, which the kernel walks down the stack once and cuts into
// datagrams at the end (in the NIC where it can).
//
// Nothing waits for a batch to fill: an idle server sends each packet's
// copies as soon as they are made, with one system call instead of one
// per copy, and batches grow with the load, which is when they pay. The
// reader reads with recvmmsg, so a busy socket gives it several datagrams
// per system call too.
//
// The reader does not fan a video packet out as it reads it, either
// (when its layer has holdFanout DownTracks or more): it holds the
// packets of one read (hold) and fans them out when it sends, one
// subscriber at a time (Layer.fanOutHeld), and a fan-out goroutine does
// the same with what its queue holds. So one subscriber's copies of a
// burst (a video frame's packets, which are of one size but the last)
// sit side by side in the batch, and go as one GSO message: without that,
// a batch of a large room's copies is one packet to 16 subscribers and
// never groups. A subscriber's copies still go in the order their packets
// were read; the first copy of a read waits for the read's others to be
// decrypted (a few microseconds each), and a later subscriber's copy of
// the read's first packet waits for the earlier subscribers' copies of
// all of them, where it waited for their copies of that packet only:
// what a subscriber can decode, a whole frame, comes as early as before
// for the last subscriber and earlier for the others.
//
// A copy's accounting (packets, bytes, the forwarding delay) is done when
// its batch is sent, so the delay includes the wait in the batch, and the
// wait for its fan-out: it runs from when the kernel received the packet
// (rxBatch), so the wait in the socket's queue is in it too.

import (
	"maps"
	"sync"
	"sync/atomic"
	"syscall"
)

// udpIO is the media socket's batched system calls (mmsg_linux.go), shared
// by every goroutine that forwards; each has its own sendBatch or rxBatch.
type udpIO struct {
	rc  syscall.RawConn // reads
	wrc syscall.RawConn // writes: ownWriter's handle
	v6  bool            // an IPv6 socket: IPv4 peers are v4-mapped
	gso atomic.Bool     // the socket takes UDP_SEGMENT; cleared once the kernel refuses it

	calls, msgs, pkts, errs, gsoOff atomic.Uint64 // sends
	reads, readPkts                 atomic.Uint64 // recvmmsg calls, datagrams they read

	causeMu sync.Mutex
	causes  map[string]uint64 // failed sends by errno name
}

// errorCauses is a copy of the failed sends by cause.
func (io *udpIO) errorCauses() map[string]uint64 {
	io.causeMu.Lock()
	defer io.causeMu.Unlock()
	if len(io.causes) == 0 {
		return nil
	}
	return maps.Clone(io.causes)
}

// txNote is what a copy's DownTrack counts once the copy is sent.
type txNote struct {
	d      *DownTrack
	at     int64 // when its packet was read (monoNow)
	made   int64 // when the copy was made (monoNow); 0: now
	n      int   // its size before encryption
	octets int   // its payload
}

// held is a goroutine's packets whose fan-out waits for its next send:
// at most heldSlots, one read's worth.
type held struct {
	n   int
	l   [heldSlots]*Layer
	num [heldSlots]uint64
}

// heldSlots is the most packets whose fan-out waits.
const heldSlots = rxSlots

// Only video is held: an audio layer's packets come one every 20 ms or
// so, never several to a read, so holding them would group nothing and
// delay every copy (in the crowded room of 200 listeners, where fan-out
// goroutines drain their queues, it doubled the delay).
//
// holdFanout is the fewest DownTracks a layer's packets are held for.
// A smaller fan-out's copies of a read's packets mostly fit one batch,
// where they group all the same (a copy joins the open GSO message to its
// destination, wherever it is in the batch), so holding would only add
// the wait and the second pass: the meeting of docs/performance.md, three
// subscribers a layer, took more CPU with it.
const holdFanout = txSlots / 2

// take empties h into a copy, so that what the fan-out writes may hold
// (and send) anew while the copy is worked through.
func (h *held) take() held {
	c := *h
	clear(h.l[:h.n])
	h.n = 0
	return c
}

// runHeld fans out the held packets, layer by layer, each layer's
// subscriber by subscriber, into q. The caller holds locked's fmu (nil:
// none).
func runHeld(h held, q *sendBatch, locked *Layer) {
	var done uint32 // entries fanned out
	var nums [heldSlots]uint64
	for i := range h.n {
		if done&(1<<i) != 0 {
			continue
		}
		l, k := h.l[i], 0
		for j := i; j < h.n; j++ {
			if h.l[j] == l {
				nums[k] = h.num[j]
				k++
				done |= 1 << j
			}
		}
		if l == locked {
			l.fanOutSocket(l.downs.load(), nums[:k], q)
		} else {
			l.fanOutHeld(nums[:k], q)
		}
	}
}

// txSlots is how many copies a batch holds: a fuller one is sent at once.
// Most of what a system call costs is saved by the first few copies it
// carries, while every copy of a batch waits for the last to be made: in
// the 50-subscriber room of docs/performance.md, 16 took as much CPU off
// as 64 did and raised the forwarding delay's p99 far less (about 0.3-0.5
// ms with bursty publishers; 64 doubled it); 8 took less CPU off for
// about the same p99. rxSlots is the most datagrams the reader takes per
// recvmmsg.
const (
	txSlots = 16
	rxSlots = 16
)

// gsoMaxSegment is the largest packet sent as a segment of a GSO message:
// the kernel refuses a segment that would not fit the device's MTU (1500
// with IPv6's 48 bytes of headers), where a single datagram would go out
// fragmented.
const gsoMaxSegment = 1400

// maxSegments is the most packets one UDP GSO send carries (the kernel's
// UDP_MAX_SEGMENTS), and maxGSOBytes the most bytes.
const (
	maxSegments = 64
	maxGSOBytes = 65000
)
