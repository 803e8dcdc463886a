// Command rawsend measures what a scheduler-visible sendmmsg costs against
// a raw one (docs/performance.md, "sendmmsg and recvmmsg as raw system
// calls"): at GOMAXPROCS=1, bursts of 8 sendmmsg of 16 datagrams of 1100
// bytes, 2 ms apart, to 10 loopback sockets that another process drains.
// It prints the process's CPU time per datagram. A third argument sets
// GOMAXPROCS (default 1).
//
//	.ci/netns bash -c 'go build -o /tmp/rawsend ./sfu/testdata/rawsend &&
//	  (/tmp/rawsend sink & sleep 0.3; /tmp/rawsend sys 1000; /tmp/rawsend raw 1000; kill %1)'
package main

import (
	"fmt"
	"net"
	"os"
	"runtime"
	"strconv"
	"syscall"
	"time"
	"unsafe"

	"golang.org/x/sys/unix"
)

type mmsghdr struct {
	hdr unix.Msghdr
	n   uint32
	_   [4]byte
}

const sinkPort = 40000

func cpu() time.Duration {
	var ru syscall.Rusage
	_ = syscall.Getrusage(syscall.RUSAGE_SELF, &ru)
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

func sink() {
	for i := range 10 {
		c, err := net.ListenUDP("udp4", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1), Port: sinkPort + i})
		if err != nil {
			fmt.Fprintln(os.Stderr, err)
			os.Exit(1)
		}
		go func() {
			b := make([]byte, 2000)
			for {
				if _, err := c.Read(b); err != nil {
					return
				}
			}
		}()
	}
	select {}
}

func main() {
	if len(os.Args) < 2 || os.Args[1] == "sink" {
		sink()
	}
	raw := os.Args[1] == "raw"
	bursts := 1000
	if len(os.Args) > 2 {
		bursts, _ = strconv.Atoi(os.Args[2])
	}
	procs := 1
	if len(os.Args) > 3 {
		procs, _ = strconv.Atoi(os.Args[3])
	}
	runtime.GOMAXPROCS(procs)
	c, err := net.ListenUDP("udp4", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	rc, _ := c.SyscallConn()
	payload := make([]byte, 1100)
	var sas [10]unix.RawSockaddrInet4
	var iov [16]unix.Iovec
	var msgs [16]mmsghdr
	for i := range sas {
		p := sinkPort + i
		sas[i].Family = unix.AF_INET
		sas[i].Port = uint16(p>>8) | uint16(p&0xff)<<8
		sas[i].Addr = [4]byte{127, 0, 0, 1}
	}
	for j := range msgs {
		iov[j].Base = &payload[0]
		iov[j].SetLen(len(payload))
		msgs[j].hdr.Name = (*byte)(unsafe.Pointer(&sas[j%10]))
		msgs[j].hdr.Namelen = unix.SizeofSockaddrInet4
		msgs[j].hdr.Iov = &iov[j]
		msgs[j].hdr.SetIovlen(1)
	}
	send := func(fd uintptr) bool {
		if raw {
			unix.RawSyscall6(unix.SYS_SENDMMSG, fd, uintptr(unsafe.Pointer(&msgs[0])), uintptr(len(msgs)), 0, 0, 0)
		} else {
			unix.Syscall6(unix.SYS_SENDMMSG, fd, uintptr(unsafe.Pointer(&msgs[0])), uintptr(len(msgs)), 0, 0, 0)
		}
		return true
	}
	start := cpu()
	for range bursts {
		for range 8 {
			_ = rc.Write(send)
		}
		time.Sleep(2 * time.Millisecond)
	}
	n := bursts * 8 * len(msgs)
	fmt.Printf("%s, GOMAXPROCS=%d: %.2f µs of CPU per datagram (%d datagrams)\n", os.Args[1], procs, float64((cpu()-start).Nanoseconds())/1e3/float64(n), n)
}
