// Package cluster lets several Parley nodes share rooms through Redis: a
// registry of live nodes with a heartbeat, the placement of each room on
// one node, and pipes that carry a participant's signaling from the node
// that holds its WebSocket to the node that holds its room
// (docs/scaling.md).
package cluster

import (
	"context"
	"crypto/tls"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"runtime"
	"sort"
	"sync"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/parley-rtc/parley/internal/proccpu"
)

// Load is what a node reports of itself.
type Load struct {
	Rooms        int `json:"rooms"`
	Participants int `json:"participants"`
	Tracks       int `json:"tracks"` // forwarded (subscribed) tracks
}

// NodeInfo is one node as registered.
type NodeInfo struct {
	ID          string   `json:"id"`
	URL         string   `json:"url,omitempty"`
	PublicAddrs []string `json:"public_addrs,omitempty"`
	Started     int64    `json:"started"`   // unix milliseconds
	Heartbeat   int64    `json:"heartbeat"` // unix milliseconds
	CPU         float64  `json:"cpu"`       // share of all cores, 0-1
	MaxTracks   int      `json:"max_tracks,omitempty"`
	MaxRooms    int      `json:"max_rooms,omitempty"`
	MaxCPU      float64  `json:"max_cpu"`
	Draining    bool     `json:"draining,omitempty"`
	PlacedRooms int      `json:"placed_rooms"` // rooms Redis places on it
	Load
}

// full reports whether the node takes no new rooms.
func (i *NodeInfo) full() bool {
	return i.Draining || (i.MaxCPU > 0 && i.CPU >= i.MaxCPU) || (i.MaxTracks > 0 && i.Tracks >= i.MaxTracks) ||
		(i.MaxRooms > 0 && max(i.Rooms, i.PlacedRooms) >= i.MaxRooms)
}

// score orders candidates: forwarded tracks, and rooms (placed ones count
// at once, before their participants bring tracks).
func (i *NodeInfo) score() int { return i.Tracks + 5*max(i.PlacedRooms, i.Rooms) }

const prefix = "parley:"

func nodeKey(id string) string      { return prefix + "node:" + id }
func nodeRoomsKey(id string) string { return prefix + "node-rooms:" + id }
func roomKey(room string) string    { return prefix + "room:" + room }
func pipeChannel(id string) string  { return prefix + "pipe:" + id }

const nodesKey = prefix + "nodes"

// Node is this server's membership of the cluster.
type Node struct {
	cfg     Config
	log     *slog.Logger
	rdb     *redis.Client
	started time.Time

	ctx    context.Context
	cancel context.CancelFunc
	wg     sync.WaitGroup

	mu        sync.Mutex
	health    error                // nil while Redis answers
	lastSeen  map[string]time.Time // when each peer's heartbeat last changed
	lastBeat  map[string]int64     // each peer's last heartbeat value
	nodes     []NodeInfo           // the registry as last read
	draining  bool
	pipes     map[string]*Pipe
	accept    func(*Pipe)
	closed    bool
	contacted bool      // Redis answered once
	recovered time.Time // when Redis last answered again after an outage
	lastClaim time.Time // when the node last re-claimed its rooms
	cpu       cpuMeter
	releaseCh chan string
}

// New connects to Redis and registers the node. A Redis that does not
// answer yet is not an error: the node keeps trying, Healthy says why it
// is not ready, and joins that need Redis fail until it answers.
func New(cfg Config, log *slog.Logger) (*Node, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if log == nil {
		log = slog.Default()
	}
	var tlsConfig *tls.Config
	if cfg.TLS {
		tlsConfig = &tls.Config{MinVersion: tls.VersionTLS12}
	}
	var rdb *redis.Client
	if cfg.SentinelMaster != "" {
		// Sentinel finds the primary, and the new one after a failover.
		rdb = redis.NewFailoverClient(&redis.FailoverOptions{MasterName: cfg.SentinelMaster, SentinelAddrs: cfg.SentinelAddrs,
			SentinelPassword: cfg.SentinelPassword,
			Username:         cfg.Username, Password: cfg.Password, DB: cfg.DB, TLSConfig: tlsConfig,
			DialTimeout: 2 * time.Second, ReadTimeout: 2 * time.Second, WriteTimeout: 2 * time.Second,
			MaxRetries: 1, MinRetryBackoff: 50 * time.Millisecond, MaxRetryBackoff: 200 * time.Millisecond})
	} else {
		rdb = redis.NewClient(&redis.Options{Addr: cfg.Addr, Username: cfg.Username, Password: cfg.Password, DB: cfg.DB,
			TLSConfig: tlsConfig, DialTimeout: 2 * time.Second, ReadTimeout: 2 * time.Second, WriteTimeout: 2 * time.Second,
			MaxRetries: 1, MinRetryBackoff: 50 * time.Millisecond, MaxRetryBackoff: 200 * time.Millisecond})
	}
	ctx, cancel := context.WithCancel(context.Background())
	n := &Node{cfg: cfg, log: log.With("node", cfg.NodeID), rdb: rdb, started: time.Now(),
		ctx: ctx, cancel: cancel, lastSeen: map[string]time.Time{}, lastBeat: map[string]int64{}, pipes: map[string]*Pipe{},
		releaseCh: make(chan string, 1024), health: fmt.Errorf("%w: not contacted yet", ErrUnavailable)}
	n.cpu.sample()
	quietRedisLog(log)
	// Subscribed before registering: a node in the registry listens.
	sub := n.rdb.Subscribe(ctx, pipeChannel(n.ID()))
	sctx, scancel := context.WithTimeout(ctx, 2*time.Second)
	_, _ = sub.Receive(sctx) // the confirmation; without Redis, go-redis subscribes later
	scancel()
	n.beat() // register before the first join, if Redis answers
	n.wg.Add(3)
	go n.heartbeatLoop()
	go n.releaseLoop()
	go n.pipeLoop(sub)
	return n, nil
}

// ID is this node's id.
func (n *Node) ID() string { return n.cfg.NodeID }

// Redis is the shared client, for the other parts that keep state there.
func (n *Node) Redis() *redis.Client { return n.rdb }

// Healthy is nil while Redis answers, or why the node cannot use it.
func (n *Node) Healthy() error {
	n.mu.Lock()
	defer n.mu.Unlock()
	return n.health
}

// SetDraining takes the node out of placement (it keeps its rooms until
// ReleaseAll).
func (n *Node) SetDraining(on bool) {
	n.mu.Lock()
	n.draining = on
	n.mu.Unlock()
	n.beat()
}

// Nodes is the registry as last read (live nodes only).
func (n *Node) Nodes() []NodeInfo {
	n.mu.Lock()
	defer n.mu.Unlock()
	return append([]NodeInfo(nil), n.nodes...)
}

// Node returns a live node of the last registry read.
func (n *Node) Node(id string) (NodeInfo, bool) {
	n.mu.Lock()
	defer n.mu.Unlock()
	for _, i := range n.nodes {
		if i.ID == id {
			return i, true
		}
	}
	return NodeInfo{}, false
}

// Close leaves the cluster: the node's rooms are released, its
// registration removed, its pipes closed.
func (n *Node) Close() {
	n.mu.Lock()
	if n.closed {
		n.mu.Unlock()
		return
	}
	n.closed = true
	pipes := make([]*Pipe, 0, len(n.pipes))
	for _, p := range n.pipes {
		pipes = append(pipes, p)
	}
	n.mu.Unlock()
	for _, p := range pipes {
		p.Close(1001, "server_shutdown")
	}
	n.cancel()
	n.wg.Wait()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	n.ReleaseAll(ctx)
	pipe := n.rdb.TxPipeline()
	pipe.Del(ctx, nodeKey(n.ID()), nodeRoomsKey(n.ID()))
	pipe.SRem(ctx, nodesKey, n.ID())
	if _, err := pipe.Exec(ctx); err != nil {
		n.log.Warn("could not remove this node from the registry; it expires by itself", "err", err, "within", n.cfg.NodeTTL)
	}
	_ = n.rdb.Close()
}

func (n *Node) heartbeatLoop() {
	defer n.wg.Done()
	t := time.NewTicker(n.cfg.Heartbeat)
	defer t.Stop()
	for {
		select {
		case <-n.ctx.Done():
			return
		case <-t.C:
			n.beat()
		}
	}
}

// beat renews the registration, re-claims the node's rooms (a Redis that
// restarted empty forgot them), reads the registry and ends the pipes of
// peers that died.
func (n *Node) beat() {
	ctx, cancel := context.WithTimeout(n.ctx, max(n.cfg.Heartbeat, time.Second))
	defer cancel()
	lost, err := n.register(ctx)
	var nodes []NodeInfo
	if err == nil {
		nodes, err = n.readRegistry(ctx)
	}
	now := time.Now()
	n.mu.Lock()
	was := n.health
	if err != nil {
		if !errors.Is(err, ErrUnavailable) {
			err = fmt.Errorf("%w: redis %s: %v", ErrUnavailable, n.cfg.where(), err)
		}
		n.health = err
	} else {
		n.health = nil
		if was != nil {
			// Peers could not be seen while Redis was away: give them a
			// full TTL to show up again before calling them dead.
			n.recovered = now
		}
		n.nodes = nodes
		for _, i := range nodes {
			// Alive is a heartbeat that changes: a dead node's key stays
			// in Redis for NodeTTL after its last one.
			if n.lastBeat[i.ID] != i.Heartbeat {
				n.lastBeat[i.ID] = i.Heartbeat
				n.lastSeen[i.ID] = now
			}
		}
		for id, seen := range n.lastSeen {
			if now.Sub(seen) > 10*n.cfg.NodeTTL {
				delete(n.lastSeen, id)
				delete(n.lastBeat, id)
			}
		}
	}
	contacted := n.contacted
	if err == nil {
		n.contacted = true
	}
	var dead []*Pipe
	if err == nil {
		for _, p := range n.pipes {
			if n.deadLocked(p.peer, p.created, now) {
				dead = append(dead, p)
			}
		}
	}
	n.mu.Unlock()
	switch {
	case err != nil && was == nil:
		n.log.Error("Redis is unreachable: calls in progress go on, new rooms cannot be placed until it answers", "err", err)
	case err == nil && was != nil && contacted:
		n.log.Info("Redis answers again")
	}
	for _, p := range dead {
		n.log.Warn("peer node stopped; ending the sessions it carried", "peer", p.peer)
		p.remoteClose(CloseNodeFailed, "node_failed")
	}
	if n.cfg.Lost != nil {
		for _, r := range lost {
			n.cfg.Lost(r)
		}
	}
}

// mayRelease reports whether the rooms of id, whose registration is gone,
// may be released: not this node's own, and only once Redis has answered
// this node for a full NodeTTL (after an outage every live node has had
// the time to register again).
func (n *Node) mayRelease(id string) bool {
	n.mu.Lock()
	defer n.mu.Unlock()
	return id != n.ID() && n.health == nil && !n.recovered.IsZero() && time.Since(n.recovered) > n.cfg.NodeTTL
}

// seenAlive reports whether this node saw id's heartbeat change within
// NodeTTL (counting from Redis's return after an outage): a node whose
// registration a restarted Redis forgot is not dead for that.
func (n *Node) seenAlive(id string) bool {
	n.mu.Lock()
	defer n.mu.Unlock()
	seen, ok := n.lastSeen[id]
	if !ok {
		return false
	}
	if seen.Before(n.recovered) {
		seen = n.recovered
	}
	return time.Since(seen) <= n.cfg.NodeTTL
}

// silent reports whether this node has watched id's heartbeat stand
// still for longer than NodeTTL (it died; its key has not expired yet).
func (n *Node) silent(id string) bool {
	n.mu.Lock()
	defer n.mu.Unlock()
	if _, known := n.lastSeen[id]; !known || n.health != nil {
		return false
	}
	return n.deadLocked(id, time.Time{}, time.Now())
}

// deadLocked reports whether a peer's heartbeat has not changed for
// longer than NodeTTL (counted from since for a peer never seen, and from
// Redis's return after an outage).
func (n *Node) deadLocked(id string, since, now time.Time) bool {
	if id == n.ID() {
		return false
	}
	seen := n.lastSeen[id]
	if seen.Before(since) {
		seen = since
	}
	if seen.Before(n.recovered) {
		seen = n.recovered
	}
	return now.Sub(seen) > n.cfg.NodeTTL
}

func (n *Node) info() NodeInfo {
	n.mu.Lock()
	draining := n.draining
	cpu := n.cpu.sample()
	n.mu.Unlock()
	i := NodeInfo{ID: n.ID(), URL: n.cfg.AdvertiseURL, PublicAddrs: n.cfg.PublicAddrs, Started: n.started.UnixMilli(),
		Heartbeat: time.Now().UnixMilli(), CPU: cpu, MaxTracks: n.cfg.MaxTracks, MaxRooms: n.cfg.MaxRooms, MaxCPU: n.cfg.MaxCPU, Draining: draining}
	if n.cfg.Load != nil {
		i.Load = n.cfg.Load()
	}
	return i
}

func (n *Node) register(ctx context.Context) (lost []string, err error) {
	data, _ := json.Marshal(n.info())
	// Re-claim the node's rooms every few beats, and at once after an
	// outage (a Redis that restarted empty forgot them).
	var rooms []string
	n.mu.Lock()
	reclaim := !n.draining && (n.health != nil || time.Since(n.lastClaim) >= 5*n.cfg.Heartbeat)
	if reclaim {
		n.lastClaim = time.Now()
	}
	n.mu.Unlock()
	if n.cfg.Rooms != nil && reclaim {
		rooms = n.cfg.Rooms()
	}
	pipe := n.rdb.Pipeline()
	pipe.Set(ctx, nodeKey(n.ID()), data, n.cfg.NodeTTL)
	pipe.SAdd(ctx, nodesKey, n.ID())
	claims := make([]*redis.BoolCmd, len(rooms))
	owners := make([]*redis.StringCmd, len(rooms))
	for i, r := range rooms {
		claims[i] = pipe.SetNX(ctx, roomKey(r), n.ID(), 0)
		owners[i] = pipe.Get(ctx, roomKey(r))
	}
	if _, err := pipe.Exec(ctx); err != nil && !errors.Is(err, redis.Nil) {
		return nil, err
	}
	var mine []any
	var stale []string
	for i, r := range rooms {
		if ok, _ := claims[i].Result(); ok {
			n.log.Info("room re-claimed in Redis (it had forgotten it)", "room", r)
			stale = append(stale, r)
		}
		owner := owners[i].Val()
		if owner != n.ID() {
			// Placed elsewhere while this node was cut off from Redis:
			// unless that node is dead, the room is split in two.
			if owner, err = n.claim(ctx, r, "", n.ID()); err != nil {
				return nil, err
			}
		}
		if owner == n.ID() {
			mine = append(mine, r)
		} else {
			n.log.Warn("room held here was placed on another node meanwhile; moving its participants there", "room", r, "node", owner)
			lost = append(lost, r)
		}
	}
	if len(mine) > 0 {
		err = n.rdb.SAdd(ctx, nodeRoomsKey(n.ID()), mine...).Err()
	}
	if len(stale) > 0 {
		// A room that emptied (and was released) between the list and
		// the claim must not stay placed here.
		still := map[string]bool{}
		for _, r := range n.cfg.Rooms() {
			still[r] = true
		}
		for _, r := range stale {
			if !still[r] {
				n.Release(r)
			}
		}
	}
	return lost, err
}

// readRegistry reads every live node, with the rooms placed on it, and
// releases the rooms of nodes whose registration expired.
func (n *Node) readRegistry(ctx context.Context) ([]NodeInfo, error) {
	ids, err := n.rdb.SMembers(ctx, nodesKey).Result()
	if err != nil {
		return nil, err
	}
	sort.Strings(ids)
	keys := make([]string, len(ids))
	for i, id := range ids {
		keys[i] = nodeKey(id)
	}
	var vals []any
	if len(keys) > 0 {
		if vals, err = n.rdb.MGet(ctx, keys...).Result(); err != nil {
			return nil, err
		}
	}
	pipe := n.rdb.Pipeline()
	var nodes []NodeInfo
	var counts []*redis.IntCmd
	for i, v := range vals {
		s, ok := v.(string)
		if !ok {
			if n.mayRelease(ids[i]) {
				n.releaseDead(ctx, ids[i])
			}
			continue
		}
		var info NodeInfo
		if json.Unmarshal([]byte(s), &info) != nil {
			continue
		}
		nodes = append(nodes, info)
		counts = append(counts, pipe.SCard(ctx, nodeRoomsKey(info.ID)))
	}
	if len(counts) > 0 {
		if _, err := pipe.Exec(ctx); err != nil {
			return nil, err
		}
	}
	for i := range nodes {
		nodes[i].PlacedRooms = int(counts[i].Val())
	}
	return nodes, nil
}

// releaseDead frees the rooms of a node whose registration expired, so
// that the next join places them on a live node.
func (n *Node) releaseDead(ctx context.Context, id string) {
	rooms, err := n.rdb.SMembers(ctx, nodeRoomsKey(id)).Result()
	if err != nil {
		return
	}
	for _, r := range rooms {
		if released, _ := releaseScript.Run(ctx, n.rdb, []string{roomKey(r), nodeRoomsKey(id)}, id, r).Int(); released == 1 {
			n.log.Info("room released: its node stopped", "room", r, "dead_node", id)
		}
	}
	n.rdb.Del(ctx, nodeRoomsKey(id))
	n.rdb.SRem(ctx, nodesKey, id)
}

// cpuMeter measures the process's share of all cores between samples.
type cpuMeter struct {
	at    time.Time
	used  time.Duration
	share float64
}

func (m *cpuMeter) sample() float64 {
	used, ok := proccpu.Used()
	if !ok {
		return m.share
	}
	now := time.Now()
	if !m.at.IsZero() {
		if wall := now.Sub(m.at); wall >= 200*time.Millisecond {
			m.share = float64(used-m.used) / float64(wall) / float64(runtime.NumCPU())
			m.at, m.used = now, used
		}
		return m.share
	}
	m.at, m.used = now, used
	return 0
}

// SharedSecret returns the cluster-wide value of name, storing fallback
// when it has none yet (the development-mode token key, so that a token
// minted by one node is good on all).
func (n *Node) SharedSecret(ctx context.Context, name, fallback string) (string, error) {
	key := prefix + "secret:" + name
	if err := n.rdb.SetNX(ctx, key, fallback, 0).Err(); err != nil {
		return fallback, n.unavailable(err)
	}
	v, err := n.rdb.Get(ctx, key).Result()
	if err != nil {
		return fallback, n.unavailable(err)
	}
	return v, nil
}
