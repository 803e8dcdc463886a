package cluster

import (
	"context"
	"errors"
	"fmt"
	"sort"
	"time"

	"github.com/redis/go-redis/v9"
)

// claimScript places KEYS[1] (a room) on ARGV[2] unless a live node other
// than ARGV[1] (the owner the caller saw, or "") holds it; it returns the
// owner. ARGV[3] is the room, ARGV[4] the node key prefix.
var claimScript = redis.NewScript(`
local cur = redis.call('GET', KEYS[1])
if cur and cur ~= ARGV[1] and cur ~= ARGV[2] and redis.call('EXISTS', ARGV[4] .. 'node:' .. cur) == 1 then
  return cur
end
if cur and cur ~= ARGV[2] then
  redis.call('SREM', ARGV[4] .. 'node-rooms:' .. cur, ARGV[3])
end
redis.call('SET', KEYS[1], ARGV[2])
redis.call('SADD', KEYS[2], ARGV[3])
return ARGV[2]
`)

// releaseScript frees KEYS[1] (a room) if node ARGV[1] holds it, and takes
// ARGV[2] from its set KEYS[2]. It returns 1 when it freed the room.
var releaseScript = redis.NewScript(`
redis.call('SREM', KEYS[2], ARGV[2])
if redis.call('GET', KEYS[1]) == ARGV[1] then
  redis.call('DEL', KEYS[1])
  return 1
end
return 0
`)

// Owner returns the live node holding room, or "" when none does.
func (n *Node) Owner(ctx context.Context, room string) (string, error) {
	owner, err := n.rdb.Get(ctx, roomKey(room)).Result()
	if errors.Is(err, redis.Nil) {
		return "", nil
	}
	if err != nil {
		return "", n.unavailable(err)
	}
	if owner == n.ID() {
		return owner, nil
	}
	alive, err := n.rdb.Exists(ctx, nodeKey(owner)).Result()
	if err != nil {
		return "", n.unavailable(err)
	}
	if (alive == 0 && !n.seenAlive(owner)) || n.silent(owner) {
		return "", nil
	}
	return owner, nil
}

// Place returns the node that holds room, placing it on the least loaded
// live node that is not full when no live node holds it.
func (n *Node) Place(ctx context.Context, room string) (string, error) {
	owner, err := n.rdb.Get(ctx, roomKey(room)).Result()
	if err != nil && !errors.Is(err, redis.Nil) {
		return "", n.unavailable(err)
	}
	if owner != "" {
		if owner == n.ID() {
			return owner, nil
		}
		alive, err := n.rdb.Exists(ctx, nodeKey(owner)).Result()
		if err != nil {
			return "", n.unavailable(err)
		}
		if (alive == 1 && !n.silent(owner)) || (alive == 0 && n.seenAlive(owner)) {
			return owner, nil
		}
	}
	nodes, err := n.readRegistry(ctx)
	if err != nil {
		return "", n.unavailable(err)
	}
	live := nodes[:0]
	for _, i := range nodes {
		if !n.silent(i.ID) {
			live = append(live, i)
		}
	}
	pick, err := choose(live)
	if err != nil {
		return "", err
	}
	return n.claim(ctx, room, owner, pick)
}

// Claim places room on this node unless a live node holds it; it returns
// the holder. The node a join was relayed to claims the room this way, so
// that a room released meanwhile is not placed twice.
func (n *Node) Claim(ctx context.Context, room string) (string, error) {
	seen, err := n.rdb.Get(ctx, roomKey(room)).Result()
	if err != nil && !errors.Is(err, redis.Nil) {
		return "", n.unavailable(err)
	}
	owner, err := n.Owner(ctx, room)
	if err != nil {
		return "", err
	}
	if owner != "" {
		return owner, nil
	}
	return n.claim(ctx, room, seen, n.ID())
}

func (n *Node) claim(ctx context.Context, room, seen, pick string) (string, error) {
	got, err := claimScript.Run(ctx, n.rdb, []string{roomKey(room), nodeRoomsKey(pick)}, seen, pick, room, prefix).Text()
	if err != nil {
		return "", n.unavailable(err)
	}
	if got == pick {
		n.log.Info("room placed", "room", room, "on", pick)
	}
	return got, nil
}

// choose picks the least loaded node that takes new rooms.
func choose(nodes []NodeInfo) (string, error) {
	var cands []NodeInfo
	for _, i := range nodes {
		if !i.full() {
			cands = append(cands, i)
		}
	}
	if len(cands) == 0 {
		return "", fmt.Errorf("%w (%d live)", ErrNoNode, len(nodes))
	}
	sort.SliceStable(cands, func(a, b int) bool {
		if sa, sb := cands[a].score(), cands[b].score(); sa != sb {
			return sa < sb
		}
		if cands[a].CPU != cands[b].CPU {
			return cands[a].CPU < cands[b].CPU
		}
		return cands[a].ID < cands[b].ID
	})
	return cands[0].ID, nil
}

// Release frees a room this node no longer holds (it emptied). It never
// blocks: the release happens on its own goroutine.
func (n *Node) Release(room string) {
	select {
	case n.releaseCh <- room:
	default:
		n.log.Warn("release queue full; the room stays placed here until it is used again", "room", room)
	}
}

func (n *Node) releaseLoop() {
	defer n.wg.Done()
	for {
		select {
		case <-n.ctx.Done():
			return
		case room := <-n.releaseCh:
			ctx, cancel := context.WithTimeout(n.ctx, 2*time.Second)
			err := releaseScript.Run(ctx, n.rdb, []string{roomKey(room), nodeRoomsKey(n.ID())}, n.ID(), room).Err()
			cancel()
			if err != nil {
				n.log.Warn("could not release a room in Redis; it is freed when this node stops", "room", room, "err", err)
			}
		}
	}
}

// ReleaseAll frees every room of this node (draining: the rooms' next
// joins place them elsewhere).
func (n *Node) ReleaseAll(ctx context.Context) {
	rooms, err := n.rdb.SMembers(ctx, nodeRoomsKey(n.ID())).Result()
	if err != nil {
		return
	}
	for _, r := range rooms {
		_ = releaseScript.Run(ctx, n.rdb, []string{roomKey(r), nodeRoomsKey(n.ID())}, n.ID(), r).Err()
	}
}

func (n *Node) unavailable(err error) error {
	if errors.Is(err, ErrUnavailable) || errors.Is(err, ErrNoNode) || errors.Is(err, ErrNodeGone) {
		return err
	}
	return fmt.Errorf("%w: redis %s: %v", ErrUnavailable, n.cfg.where(), err)
}
