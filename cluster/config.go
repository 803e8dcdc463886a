package cluster

import (
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"os"
	"regexp"
	"strings"
	"time"
)

// Config of a node. Addr empty means no cluster (the caller makes no Node).
type Config struct {
	Addr     string // Redis host:port
	Username string
	Password string
	DB       int
	TLS      bool
	// SentinelMaster, with SentinelAddrs (host:port of the sentinels),
	// finds the Redis primary through Redis Sentinel instead of Addr, and
	// follows it when a failover promotes another.
	SentinelMaster   string
	SentinelAddrs    []string
	SentinelPassword string

	// NodeID names this node in the registry (default: host name and a
	// random suffix, new on every start).
	NodeID string
	// AdvertiseURL is where the other nodes reach this node's HTTP server
	// (the admin API forwards actions on rooms held elsewhere).
	AdvertiseURL string
	// PublicAddrs are the node's media addresses, shown in the registry.
	PublicAddrs []string
	// Heartbeat is how often the node renews its registration (1s);
	// NodeTTL how long after the last renewal it counts as dead (5s).
	Heartbeat time.Duration
	NodeTTL   time.Duration
	// MaxTracks is the forwarded tracks beyond which the node takes no
	// new rooms (0: no limit); MaxCPU the share of its CPU (0.9).
	MaxTracks int
	MaxCPU    float64
	// MaxRooms is the rooms the node holds at most (rooms.max_rooms): a
	// node that holds that many is not given another.
	MaxRooms int
	// Load reports the node's own load; Rooms its rooms (re-claimed on
	// every heartbeat, so that a Redis that lost its data is repaired).
	Load  func() Load
	Rooms func() []string
	// Lost is told of a room this node holds that Redis places on another
	// live node (it was placed there while this node was cut off from
	// Redis): its participants should move there (join again).
	Lost func(room string)
}

var nodeIDPattern = regexp.MustCompile(`^[A-Za-z0-9_.\-]{1,64}$`)

// Validate fills defaults and names the first bad key.
func (c *Config) Validate() error {
	switch {
	case c.Addr == "" && c.SentinelMaster == "":
		return fmt.Errorf("%w: redis.addr (or redis.sentinel_master) is empty", ErrBadConfig)
	case c.Addr != "" && c.SentinelMaster != "":
		return fmt.Errorf("%w: redis.addr and redis.sentinel_master exclude each other: with Sentinel, Parley asks the sentinels for the primary", ErrBadConfig)
	case c.SentinelMaster != "" && len(c.SentinelAddrs) == 0:
		return fmt.Errorf("%w: redis.sentinel_addrs: list the sentinels (host:port) that watch %q", ErrBadConfig, c.SentinelMaster)
	}
	if c.DB < 0 {
		return fmt.Errorf("%w: redis.db must not be negative", ErrBadConfig)
	}
	if c.NodeID == "" {
		host, _ := os.Hostname()
		if !nodeIDPattern.MatchString(host) || len(host) > 40 {
			host = "node"
		}
		var b [3]byte
		_, _ = rand.Read(b[:])
		c.NodeID = host + "-" + hex.EncodeToString(b[:])
	}
	if !nodeIDPattern.MatchString(c.NodeID) {
		return fmt.Errorf("%w: cluster.node_id %q: use 1-64 letters, digits, '.', '_' or '-'", ErrBadConfig, c.NodeID)
	}
	if c.Heartbeat < 0 || c.NodeTTL < 0 || c.MaxTracks < 0 || c.MaxCPU < 0 || c.MaxCPU > 1 {
		return fmt.Errorf("%w: cluster.heartbeat, node_ttl and max_tracks must not be negative, max_cpu must be in [0, 1]", ErrBadConfig)
	}
	if c.Heartbeat == 0 {
		c.Heartbeat = time.Second
	}
	if c.NodeTTL == 0 {
		c.NodeTTL = 5 * time.Second
	}
	if c.NodeTTL < 2*c.Heartbeat {
		return fmt.Errorf("%w: cluster.node_ttl (%s) must be at least twice cluster.heartbeat (%s)", ErrBadConfig, c.NodeTTL, c.Heartbeat)
	}
	if c.MaxCPU == 0 {
		c.MaxCPU = 0.9
	}
	return nil
}

// where names the Redis in messages.
func (c *Config) where() string {
	if c.SentinelMaster != "" {
		return fmt.Sprintf("%s (sentinels %s)", c.SentinelMaster, strings.Join(c.SentinelAddrs, ","))
	}
	return c.Addr
}
