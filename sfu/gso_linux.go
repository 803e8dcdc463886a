package sfu

import (
	"encoding/binary"
	"errors"
	"os"
	"strconv"
	"syscall"
	"unsafe"

	"golang.org/x/sys/unix"
)

const batchIOSupported = true

// gsoCmsgLen is the size of the UDP_SEGMENT control message, room for
// unix.CmsgSpace(2) on every platform Go runs Linux on.
const gsoCmsgLen = 24

// putGSOCmsg writes a UDP_SEGMENT control message for segments of size
// bytes into b (gsoCmsgLen long).
func putGSOCmsg(b []byte, size uint16) {
	h := (*unix.Cmsghdr)(unsafe.Pointer(&b[0]))
	h.Level = unix.SOL_UDP
	h.Type = unix.UDP_SEGMENT
	h.SetLen(unix.CmsgLen(2))
	binary.NativeEndian.PutUint16(b[unix.CmsgLen(0):], size)
}

// gsoSupported reports whether the kernel takes UDP_SEGMENT on rc's
// socket: reading the option back works from Linux 4.18, the release that
// added UDP GSO.
func gsoSupported(rc syscall.RawConn) bool {
	ok := false
	_ = rc.Control(func(fd uintptr) {
		_, err := unix.GetsockoptInt(int(fd), unix.SOL_UDP, unix.UDP_SEGMENT)
		ok = err == nil
	})
	return ok
}

// failed counts a send the kernel refused, by its cause (errors are rare:
// a lock is cheap enough).
func (io *udpIO) failed(err error) {
	io.errs.Add(1)
	cause := "other"
	var e syscall.Errno
	switch {
	case errors.As(err, &e):
		cause = errnoName(e)
	case errors.Is(err, os.ErrDeadlineExceeded):
		cause = "timeout" // a write deadline on the handle
	}
	io.causeMu.Lock()
	if io.causes == nil {
		io.causes = map[string]uint64{}
	}
	io.causes[cause]++
	io.causeMu.Unlock()
}

// errnoName is e's symbolic name ("ECONNREFUSED"), or its number.
func errnoName(e syscall.Errno) string {
	if n := unix.ErrnoName(e); n != "" {
		return n
	}
	return "errno " + strconv.Itoa(int(e))
}

// isGSOError: the kernel refused a segmented send (EIO: the device cannot
// checksum; EINVAL: a segment size it does not take).
func isGSOError(err error) bool {
	return errors.Is(err, unix.EIO) || errors.Is(err, unix.EINVAL)
}
