package sfu

import (
	"net"
)

// ownWriter is a second handle on the media socket c for the writes
// Parley makes itself (the direct send path, batched or not), with a
// write deadline of its own. pion's UDP mux, to abort a write of a
// connection that closes, sets the socket's write deadline to now for a
// moment (ice.UDPMuxDefault.abortWrite) and holds its own writes back
// meanwhile; every other write through that handle fails at once. Through
// it, a participant leaving a busy room cost everyone else the copies
// forwarded in that moment (seen as 120-1897 failed sends when 200
// listeners left at once). A handle made by dup(2) is the same socket
// (port, buffers) with a Go poll descriptor, and so a deadline, of its
// own.
//
// It is c itself where no such handle can be made (pion's vnet, or a
// platform without it). closeW closes the handle, not the socket. Make it
// before the socket is used: making it turns the socket blocking for a
// moment (net.FilePacketConn calls os.File.Fd, then sets the new handle,
// and with it the socket, non-blocking again).
func ownWriter(c net.PacketConn) (w net.PacketConn, closeW func()) {
	uc, ok := c.(*net.UDPConn)
	if !ok {
		return c, func() {}
	}
	f, err := uc.File()
	if err != nil {
		return c, func() {}
	}
	defer f.Close()
	fc, err := net.FilePacketConn(f)
	if err != nil {
		return c, func() {}
	}
	if _, ok := fc.(*net.UDPConn); !ok {
		_ = fc.Close()
		return c, func() {}
	}
	return fc, func() { _ = fc.Close() }
}
