package main

import (
	"bufio"
	"bytes"
	"io"
	"net"
	"sync"
	"testing"
)

// tcpProxy forwards TCP connections from a loopback port to the server's
// HTTP address, so that a test can take a page's network away: the page,
// the token request and the WebSocket go through it, media (ICE) goes
// straight to the server. cut closes every connection and refuses new ones
// until restore; blockWebSockets does the same to WebSockets only, so the
// page can still be loaded.
type tcpProxy struct {
	ln net.Listener
	wg sync.WaitGroup

	mu     sync.Mutex
	target string
	down   bool // cut: refuse everything
	noWS   bool // refuse WebSocket upgrades
	closed bool
	conns  map[*proxyConn]struct{}
}

type proxyConn struct {
	client, upstream net.Conn // upstream is nil until dialed
	ws               bool
}

func startProxy(t *testing.T, target string) *tcpProxy {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	p := &tcpProxy{ln: ln, target: target, conns: map[*proxyConn]struct{}{}}
	p.wg.Add(1)
	go p.serve()
	t.Cleanup(p.close)
	return p
}

// URL is the proxy's base URL, in place of the server's.
func (p *tcpProxy) URL() string { return "http://" + p.ln.Addr().String() }

func (p *tcpProxy) serve() {
	defer p.wg.Done()
	for {
		c, err := p.ln.Accept()
		if err != nil {
			return
		}
		p.wg.Add(1)
		go func() {
			defer p.wg.Done()
			p.handle(c)
		}()
	}
}

// handle reads the first request line, to tell WebSockets (GET /rtc) from
// the rest, then pipes both ways until either side ends.
func (p *tcpProxy) handle(client net.Conn) {
	pc := &proxyConn{client: client}
	if !p.admit(pc, false) {
		client.Close()
		return
	}
	defer p.drop(pc)
	br := bufio.NewReader(client)
	line, err := br.ReadSlice('\n')
	if err != nil {
		return
	}
	if !p.admit(pc, bytes.HasPrefix(line, []byte("GET /rtc"))) {
		return
	}
	p.mu.Lock()
	target := p.target
	p.mu.Unlock()
	up, err := net.Dial("tcp", target)
	if err != nil {
		return
	}
	p.mu.Lock()
	if _, ok := p.conns[pc]; !ok { // cut meanwhile
		p.mu.Unlock()
		up.Close()
		return
	}
	pc.upstream = up
	p.mu.Unlock()
	if _, err := up.Write(line); err != nil {
		return
	}
	done := make(chan struct{}, 2)
	go func() { _, _ = io.Copy(up, br); done <- struct{}{} }()
	go func() { _, _ = io.Copy(client, up); done <- struct{}{} }()
	<-done
	p.drop(pc) // unblocks the other copy
	<-done
}

// admit registers pc, or says no when the proxy refuses it.
func (p *tcpProxy) admit(pc *proxyConn, ws bool) bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	pc.ws = ws
	if p.closed || p.down || (ws && p.noWS) {
		delete(p.conns, pc)
		return false
	}
	p.conns[pc] = struct{}{}
	return true
}

func (p *tcpProxy) drop(pc *proxyConn) {
	p.mu.Lock()
	delete(p.conns, pc)
	up := pc.upstream
	p.mu.Unlock()
	pc.client.Close()
	if up != nil {
		up.Close()
	}
}

// closeWhere closes the connections that match.
func (p *tcpProxy) closeWhere(match func(*proxyConn) bool) {
	p.mu.Lock()
	var victims []*proxyConn
	for pc := range p.conns {
		if match(pc) {
			victims = append(victims, pc)
		}
	}
	p.mu.Unlock()
	for _, pc := range victims {
		p.drop(pc)
	}
}

// cut takes the network away: every connection closes and new ones are
// accepted and closed at once.
func (p *tcpProxy) cut() {
	p.mu.Lock()
	p.down = true
	p.mu.Unlock()
	p.closeWhere(func(*proxyConn) bool { return true })
}

// restore gives the network back.
func (p *tcpProxy) restore() {
	p.mu.Lock()
	p.down = false
	p.mu.Unlock()
}

// retarget sends new connections to another address, as a load balancer
// does when a server goes away; open ones stay where they are.
func (p *tcpProxy) retarget(target string) {
	p.mu.Lock()
	p.target = target
	p.mu.Unlock()
}

// blockWebSockets closes the WebSockets and refuses new ones (on) or lets
// them through again (off); plain HTTP keeps working.
func (p *tcpProxy) blockWebSockets(on bool) {
	p.mu.Lock()
	p.noWS = on
	p.mu.Unlock()
	if on {
		p.closeWhere(func(pc *proxyConn) bool { return pc.ws })
	}
}

func (p *tcpProxy) close() {
	p.mu.Lock()
	p.closed = true
	p.mu.Unlock()
	p.ln.Close()
	p.closeWhere(func(*proxyConn) bool { return true })
	p.wg.Wait()
}
