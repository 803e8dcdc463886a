package cluster

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"sync"
	"time"

	"github.com/redis/go-redis/v9"
)

// Close codes a pipe ends with besides the WebSocket ones it carries.
const (
	// CloseNodeFailed: the node at the other end stopped heartbeating.
	CloseNodeFailed = 4010
	// CloseUnknownSession: the other end does not know the session (it
	// restarted, or ended it).
	CloseUnknownSession = 4011
	// CloseOverflow: frames came faster than the pipe's reader took them.
	CloseOverflow = 4012
)

// pipeBuffer is how many frames a pipe holds for its reader.
const pipeBuffer = 1024

// frame is what travels on a node's pipe channel.
type frame struct {
	Kind    string `json:"k"` // o(pen), m(essage), c(lose)
	Session string `json:"s"`
	From    string `json:"f"`
	Data    string `json:"d,omitempty"`
	Code    int    `json:"c,omitempty"`
	Text    string `json:"t,omitempty"`
	Remote  string `json:"a,omitempty"` // the client's address, on open
}

// A Pipe carries one participant's signaling between the node that holds
// its WebSocket and the node that holds its room, over Redis pub/sub, in
// order.
type Pipe struct {
	n       *Node
	id      string
	peer    string
	remote  string
	created time.Time

	in       chan []byte
	mu       sync.Mutex
	inClosed bool // in is closed: the other end closed or died
	sentEnd  bool // this end sent (or need not send) its close
	code     int
	text     string
}

// Peer is the node at the other end.
func (p *Pipe) Peer() string { return p.peer }

// Remote is the client's address, as the node holding its socket saw it.
func (p *Pipe) Remote() string { return p.remote }

// Recv gives the frames from the other end; it is closed when the other
// end closes the pipe or its node dies (then CloseStatus says how).
func (p *Pipe) Recv() <-chan []byte { return p.in }

// CloseStatus is the code and text the pipe was closed with.
func (p *Pipe) CloseStatus() (int, string) {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.code, p.text
}

// Send passes one frame to the other end. It returns ErrClosed once the
// pipe is closed, and ErrUnavailable when Redis does not take it (the
// frame is lost; the pipe stays open).
func (p *Pipe) Send(data []byte) error {
	p.mu.Lock()
	closed := p.inClosed || p.sentEnd
	p.mu.Unlock()
	if closed {
		return ErrClosed
	}
	return p.n.publish(p.peer, frame{Kind: "m", Session: p.id, Data: string(data)})
}

// Close ends the pipe and tells the other end, with a WebSocket close
// code and text. Only the first close counts.
func (p *Pipe) Close(code int, text string) {
	p.mu.Lock()
	tell := !p.sentEnd && !p.inClosed
	p.sentEnd = true
	p.closeInLocked(code, text)
	p.mu.Unlock()
	p.n.forget(p)
	if tell {
		if err := p.n.publish(p.peer, frame{Kind: "c", Session: p.id, Code: code, Text: text}); err != nil {
			p.n.log.Debug("pipe close not delivered", "peer", p.peer, "err", err)
		}
	}
}

// remoteClose ends the pipe because the other end closed it (or died).
func (p *Pipe) remoteClose(code int, text string) {
	p.mu.Lock()
	p.sentEnd = true
	p.closeInLocked(code, text)
	p.mu.Unlock()
	p.n.forget(p)
}

func (p *Pipe) closeInLocked(code int, text string) {
	if p.inClosed {
		return
	}
	p.inClosed = true
	p.code, p.text = code, text
	close(p.in)
}

// deliver hands a frame from the other end to the reader, or ends a pipe
// whose reader fell behind.
func (p *Pipe) deliver(data []byte) {
	p.mu.Lock()
	if p.inClosed {
		p.mu.Unlock()
		return
	}
	select {
	case p.in <- data:
		p.mu.Unlock()
	default:
		p.mu.Unlock()
		p.n.log.Warn("pipe reader fell behind; closing the session", "peer", p.peer)
		go p.Close(CloseOverflow, "pipe overflow") // the dispatcher must not wait on Redis
	}
}

// OnPipe sets the handler of the pipes other nodes open to this one (a
// WebSocket they hold, for a room this node holds). It runs on its own
// goroutine, with the first frame already in the pipe.
func (n *Node) OnPipe(accept func(*Pipe)) {
	n.mu.Lock()
	n.accept = accept
	n.mu.Unlock()
}

// Dial opens a pipe to node peer for a client at remote, with its first
// frame. ErrNodeGone means the peer does not listen (it died, or Redis
// lost it for a moment): try again once the registry catches up.
func (n *Node) Dial(ctx context.Context, peer, remote string, first []byte) (*Pipe, error) {
	var b [12]byte
	_, _ = rand.Read(b[:])
	p := &Pipe{n: n, id: hex.EncodeToString(b[:]), peer: peer, remote: remote, created: time.Now(), in: make(chan []byte, pipeBuffer)}
	n.mu.Lock()
	if n.closed {
		n.mu.Unlock()
		return nil, ErrClosed
	}
	n.pipes[p.id] = p
	n.mu.Unlock()
	data, _ := json.Marshal(frame{Kind: "o", Session: p.id, From: n.ID(), Data: string(first), Remote: remote})
	got, err := n.rdb.Publish(ctx, pipeChannel(peer), data).Result()
	if err == nil && got == 0 {
		err = ErrNodeGone
	}
	if err != nil {
		n.forget(p)
		return nil, n.unavailable(err)
	}
	return p, nil
}

func (n *Node) forget(p *Pipe) {
	n.mu.Lock()
	if n.pipes[p.id] == p {
		delete(n.pipes, p.id)
	}
	n.mu.Unlock()
}

// Pipes is how many pipes are open (both directions).
func (n *Node) Pipes() int {
	n.mu.Lock()
	defer n.mu.Unlock()
	return len(n.pipes)
}

func (n *Node) publish(peer string, f frame) error {
	f.From = n.ID()
	data, _ := json.Marshal(f)
	ctx, cancel := context.WithTimeout(n.ctx, 2*time.Second)
	defer cancel()
	if err := n.rdb.Publish(ctx, pipeChannel(peer), data).Err(); err != nil {
		return n.unavailable(err)
	}
	return nil
}

// pipeLoop receives this node's frames and routes them to their pipes.
// go-redis resubscribes by itself after Redis comes back.
func (n *Node) pipeLoop(sub *redis.PubSub) {
	defer n.wg.Done()
	defer sub.Close()
	ch := sub.Channel(redisChannelOptions()...)
	for {
		select {
		case <-n.ctx.Done():
			return
		case m, ok := <-ch:
			if !ok {
				return
			}
			var f frame
			if json.Unmarshal([]byte(m.Payload), &f) != nil || f.Session == "" {
				continue
			}
			n.route(f)
		}
	}
}

func (n *Node) route(f frame) {
	n.mu.Lock()
	p := n.pipes[f.Session]
	accept := n.accept
	closed := n.closed
	n.mu.Unlock()
	switch {
	case p != nil && f.Kind == "c":
		p.remoteClose(f.Code, f.Text)
	case p != nil:
		p.deliver([]byte(f.Data))
	case f.Kind == "o" && accept != nil && !closed:
		p = &Pipe{n: n, id: f.Session, peer: f.From, remote: f.Remote, created: time.Now(), in: make(chan []byte, pipeBuffer)}
		p.in <- []byte(f.Data)
		n.mu.Lock()
		n.pipes[p.id] = p
		n.mu.Unlock()
		go accept(p)
	case f.Kind != "c":
		// A session this node does not know: tell the other end, so its
		// client is not left waiting.
		go func() {
			_ = n.publish(f.From, frame{Kind: "c", Session: f.Session, Code: CloseUnknownSession, Text: "session_unknown"})
		}()
	}
}
