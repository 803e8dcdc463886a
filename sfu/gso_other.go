//go:build !linux

package sfu

import "net"

const gsoCmsgLen = 24

func putGSOCmsg([]byte, uint16)      {}
func gsoSupported(*net.UDPConn) bool { return false }
func isGSOError(error) bool          { return false }
