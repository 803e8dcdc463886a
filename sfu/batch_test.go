package sfu

import (
	"bytes"
	"fmt"
	"net"
	"testing"
	"time"
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
