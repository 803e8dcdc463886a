//go:build !linux

package sfu

import (
	"net"
	"net/netip"
)

// Batched socket I/O is Linux's (sendbatch_linux.go): elsewhere every copy
// is written as it is made.

const batchIOSupported = false

func newUDPIO(_, _ net.PacketConn) *udpIO { return nil }

type sendBatch struct{}

type destAddr struct{}

func newSendBatch(*udpIO) *sendBatch                                   { return nil }
func (*sendBatch) next() []byte                                        { return nil }
func (*sendBatch) commit(*directPath, *net.UDPAddr, int, txNote) error { return errNoDirectPair }
func (*sendBatch) pending() bool                                       { return false }
func (*sendBatch) flush()                                              {}
func (*sendBatch) flushLocked(*Layer)                                  {}
func (*sendBatch) hold(*Layer, uint64)                                 {}
func (*sendBatch) holds(*Layer) bool                                   { return false }

type rxBatch struct{}

func newRxBatch(*udpIO) *rxBatch                       { return nil }
func (*rxBatch) fill() error                           { return nil }
func (*rxBatch) more() bool                            { return false }
func (*rxBatch) take() ([]byte, netip.AddrPort, int64) { return nil, netip.AddrPort{}, 0 }
