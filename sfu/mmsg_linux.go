package sfu

// The media socket's batched system calls: recvmmsg for the reader,
// sendmmsg (with UDP GSO where the kernel takes it) for what the reader
// and the fan-out goroutines forward. sendbatch.go has why and how.

import (
	"net"
	"net/netip"
	"strconv"
	"syscall"
	"unsafe"

	"golang.org/x/sys/unix"
)

// mmsghdr is the kernel's struct mmsghdr: a message and, after the call,
// how many bytes it carried.
type mmsghdr struct {
	hdr unix.Msghdr
	n   uint32
}

// newUDPIO is the batched I/O of c, or nil when c cannot have it. It
// reads c and writes through w, a handle on the same socket (ownWriter;
// c itself will do).
func newUDPIO(c, w net.PacketConn) *udpIO {
	rc, wrc := udpRaw(c), udpRaw(w)
	if rc == nil || wrc == nil {
		return nil
	}
	io := &udpIO{rc: rc, wrc: wrc}
	fam := 0
	if err := rc.Control(func(fd uintptr) {
		if sa, err := unix.Getsockname(int(fd)); err == nil {
			switch sa.(type) {
			case *unix.SockaddrInet4:
				fam = unix.AF_INET
			case *unix.SockaddrInet6:
				fam = unix.AF_INET6
			}
		}
	}); err != nil || fam == 0 {
		return nil
	}
	io.v6 = fam == unix.AF_INET6
	io.gso.Store(gsoSupported(rc))
	return io
}

// udpRaw is c's raw socket access, or nil when c is not a UDP socket.
func udpRaw(c net.PacketConn) syscall.RawConn {
	uc, ok := c.(*net.UDPConn)
	if !ok {
		return nil
	}
	rc, err := uc.SyscallConn()
	if err != nil {
		return nil
	}
	return rc
}

// sockaddr is a raw socket address, IPv4 or IPv6 (the larger).
type sockaddr struct {
	raw unix.RawSockaddrInet6
	len uint32
}

// setSockaddr writes a as the socket's family takes it: IPv4 peers of an
// IPv6 socket as v4-mapped addresses. False: a cannot be sent to from this
// socket (an IPv6 peer of an IPv4 socket).
func (io *udpIO) setSockaddr(sa *sockaddr, a *net.UDPAddr) bool {
	port := [2]byte{byte(a.Port >> 8), byte(a.Port)}
	if !io.v6 {
		v4 := a.IP.To4()
		if v4 == nil {
			return false
		}
		r := (*unix.RawSockaddrInet4)(unsafe.Pointer(&sa.raw))
		*r = unix.RawSockaddrInet4{Family: unix.AF_INET}
		*(*[2]byte)(unsafe.Pointer(&r.Port)) = port
		copy(r.Addr[:], v4)
		sa.len = unix.SizeofSockaddrInet4
		return true
	}
	ip := a.IP.To16()
	if ip == nil {
		return false
	}
	sa.raw = unix.RawSockaddrInet6{Family: unix.AF_INET6}
	*(*[2]byte)(unsafe.Pointer(&sa.raw.Port)) = port
	copy(sa.raw.Addr[:], ip)
	if a.Zone != "" && ip.IsLinkLocalUnicast() {
		if ifi, err := net.InterfaceByName(a.Zone); err == nil {
			sa.raw.Scope_id = uint32(ifi.Index)
		} else if n, err := strconv.Atoi(a.Zone); err == nil {
			sa.raw.Scope_id = uint32(n)
		}
	}
	sa.len = unix.SizeofSockaddrInet6
	return true
}

// addrPort reads a socket address the kernel wrote, as Go's net package
// does: an IPv6 socket's IPv4 peers stay v4-mapped.
func addrPort(sa *unix.RawSockaddrInet6) netip.AddrPort {
	switch sa.Family {
	case unix.AF_INET:
		r := (*unix.RawSockaddrInet4)(unsafe.Pointer(sa))
		p := (*[2]byte)(unsafe.Pointer(&r.Port))
		return netip.AddrPortFrom(netip.AddrFrom4(r.Addr), uint16(p[0])<<8|uint16(p[1]))
	case unix.AF_INET6:
		p := (*[2]byte)(unsafe.Pointer(&sa.Port))
		ip := netip.AddrFrom16(sa.Addr)
		if sa.Scope_id != 0 {
			zone := strconv.Itoa(int(sa.Scope_id))
			if ifi, err := net.InterfaceByIndex(int(sa.Scope_id)); err == nil {
				zone = ifi.Name
			}
			ip = ip.WithZone(zone)
		}
		return netip.AddrPortFrom(ip, uint16(p[0])<<8|uint16(p[1]))
	}
	return netip.AddrPort{}
}

// mmsgCall is one goroutine's batched system call: its arguments and
// results, and the functions the socket's RawConn runs, made once so that
// a call allocates nothing.
type mmsgCall struct {
	msgs       []mmsghdr
	res        int
	errno      syscall.Errno
	send, recv func(fd uintptr) bool
}

func newMMsgCall() *mmsgCall {
	c := &mmsgCall{}
	c.send, c.recv = c.doSend, c.doRecv
	return c
}

// The socket is non-blocking (Go's netpoller waits for it), so neither
// call ever sleeps in the kernel: they are made as raw system calls, which
// do not tell the scheduler that the goroutine entered a system call. A
// batch of copies can keep sendmmsg in the kernel for 50 µs and more (on
// loopback it delivers every copy into its receiver's socket too); a
// scheduler-visible call that long lets the runtime's monitor thread
// (sysmon) take the P away, hand it off, and start polling every 20 µs
// again, and the goroutine must get a P back when the call returns: per
// burst, CPU that an SFU with one P spends for nothing.
func (c *mmsgCall) doSend(fd uintptr) bool {
	r, _, e := unix.RawSyscall6(unix.SYS_SENDMMSG, fd, uintptr(unsafe.Pointer(&c.msgs[0])), uintptr(len(c.msgs)), 0, 0, 0)
	for e == unix.EINTR {
		r, _, e = unix.RawSyscall6(unix.SYS_SENDMMSG, fd, uintptr(unsafe.Pointer(&c.msgs[0])), uintptr(len(c.msgs)), 0, 0, 0)
	}
	if e == unix.EAGAIN {
		return false // wait until the socket's buffer has room
	}
	c.res, c.errno = int(r), e
	return true
}

func (c *mmsgCall) doRecv(fd uintptr) bool {
	r, _, e := unix.RawSyscall6(unix.SYS_RECVMMSG, fd, uintptr(unsafe.Pointer(&c.msgs[0])), uintptr(len(c.msgs)), unix.MSG_DONTWAIT, 0, 0)
	for e == unix.EINTR {
		r, _, e = unix.RawSyscall6(unix.SYS_RECVMMSG, fd, uintptr(unsafe.Pointer(&c.msgs[0])), uintptr(len(c.msgs)), unix.MSG_DONTWAIT, 0, 0)
	}
	if e == unix.EAGAIN {
		return false // wait for a datagram
	}
	c.res, c.errno = int(r), e
	return true
}

// sendmmsg hands msgs to the kernel, waiting while the socket's buffer is
// full: how many went, or the error of the first, which did not.
func (io *udpIO) sendmmsg(c *mmsgCall, msgs []mmsghdr) (int, error) {
	if len(msgs) == 0 {
		return 0, nil
	}
	return io.call(c, true, msgs)
}

// recvmmsg reads up to len(msgs) datagrams, waiting for the first: how
// many came.
func (io *udpIO) recvmmsg(c *mmsgCall, msgs []mmsghdr) (int, error) {
	return io.call(c, false, msgs)
}

// call runs c's sendmmsg (write) or recvmmsg on msgs, waiting for the
// socket as its net.UDPConn would.
func (io *udpIO) call(c *mmsgCall, write bool, msgs []mmsghdr) (int, error) {
	c.msgs, c.res, c.errno = msgs, 0, 0
	var err error
	if write {
		err = io.wrc.Write(c.send)
	} else {
		err = io.rc.Read(c.recv)
	}
	c.msgs = nil
	switch {
	case err != nil:
		return 0, err
	case c.errno != 0:
		return 0, c.errno
	}
	return c.res, nil
}

// setMsg points h at one iovec list, an address and, when oob is not nil,
// a control message.
func setMsg(h *mmsghdr, iov []unix.Iovec, sa *sockaddr, oob []byte) {
	h.hdr = unix.Msghdr{Name: (*byte)(unsafe.Pointer(&sa.raw)), Namelen: sa.len, Iov: &iov[0]}
	h.hdr.SetIovlen(len(iov))
	if oob != nil {
		h.hdr.Control = &oob[0]
		h.hdr.SetControllen(len(oob))
	}
	h.n = 0
}

// setRecv points h at one buffer, room for the sender's address and for
// the control message oob (the receive time).
func setRecv(h *mmsghdr, iov *unix.Iovec, buf []byte, sa *unix.RawSockaddrInet6, oob []byte) {
	iov.Base = &buf[0]
	iov.SetLen(len(buf))
	h.hdr = unix.Msghdr{Name: (*byte)(unsafe.Pointer(sa)), Namelen: unix.SizeofSockaddrInet6, Iov: iov}
	h.hdr.SetIovlen(1)
	h.hdr.Control = &oob[0]
	h.hdr.SetControllen(len(oob))
	h.n = 0
}

// stampCmsgLen is the room for SO_TIMESTAMPNS's control message: a header
// and a struct timespec (32 bytes on 64-bit Linux).
const stampCmsgLen = 64

// stampRx asks the kernel for each datagram's receive time
// (SO_TIMESTAMPNS): rxStamp reads it. Without it, rxStamp finds none.
func (io *udpIO) stampRx() {
	_ = io.rc.Control(func(fd uintptr) {
		_ = unix.SetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_TIMESTAMPNS, 1)
	})
}

// rxStamp is the receive time (Unix ns) in a received message's control
// data, if the kernel gave one.
func rxStamp(h *unix.Msghdr) (int64, bool) {
	n, want := int(h.Controllen), unix.CmsgLen(int(unsafe.Sizeof(unix.Timespec{})))
	if h.Control == nil || n < want {
		return 0, false
	}
	b := unsafe.Slice(h.Control, n)
	c := (*unix.Cmsghdr)(unsafe.Pointer(&b[0]))
	if c.Level != unix.SOL_SOCKET || c.Type != unix.SO_TIMESTAMPNS || int(c.Len) < want {
		return 0, false
	}
	ts := (*unix.Timespec)(unsafe.Pointer(&b[unix.CmsgLen(0)]))
	return ts.Nano(), true
}

func setIov(v *unix.Iovec, b []byte) {
	v.Base = &b[0]
	v.SetLen(len(b))
}
