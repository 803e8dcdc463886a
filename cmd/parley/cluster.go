package main

import (
	"context"
	"errors"
	"fmt"
	"log/slog"

	"github.com/parley-rtc/parley/admin"
	"github.com/parley-rtc/parley/cluster"
	"github.com/parley-rtc/parley/events"
	"github.com/parley-rtc/parley/rooms"
)

// clusterState is what a node of a cluster shares besides placement and
// signaling, all through Redis: the rooms' chat history, snapshots of its
// rooms, and its room events; and it is the admin API's view of the other
// nodes (admin.Cluster).
type clusterState struct {
	node   *cluster.Node
	chat   *cluster.ChatStore
	states *cluster.RoomStates
	relay  *cluster.EventRelay
}

// startClusterState starts sharing. Call it before the node takes joins:
// the rooms' chat store is set here.
func startClusterState(cfg Config, node *cluster.Node, mgr *rooms.Manager, bus *events.Bus, log *slog.Logger) (*clusterState, error) {
	chat, err := cluster.NewChatStore(node.Redis(), cluster.ChatConfig{History: cfg.Data.History, Retention: cfg.Data.HistoryRetention,
		Rooms: mgr.Rooms}, log.With("part", "chat-store"))
	if err != nil {
		return nil, err
	}
	mgr.SetChatStore(chat)
	c := &clusterState{node: node, chat: chat, states: cluster.NewRoomStates(node, mgr, cluster.StateConfig{}, log.With("part", "room-states"))}
	bus.SetNode(node.ID())
	c.relay = cluster.NewEventRelay(node, func(data []byte) {
		if err := bus.PublishRemote(data); err != nil {
			log.Debug("an event from another node could not be read", "err", err)
		}
	}, log.With("part", "events"))
	// This node's events only: other nodes' never come back out.
	bus.OnEvent(func(e events.Event, data []byte) {
		c.states.Changed(e.Room)
		c.relay.Publish(data)
	})
	return c, nil
}

// Close stops sharing: the last events and chat writes go out, this
// node's room snapshots are removed.
func (c *clusterState) Close() {
	c.relay.Close()
	c.states.Close()
	c.chat.Close()
}

// The metrics' view of the cluster (metrics.ClusterSource).

func (c *clusterState) Healthy() error         { return c.node.Healthy() }
func (c *clusterState) LiveNodes() int         { return len(c.node.Nodes()) }
func (c *clusterState) RelayedSessions() int   { return c.node.Pipes() }
func (c *clusterState) ChatWritesLost() uint64 { return c.chat.Dropped() }
func (c *clusterState) EventsLost() uint64     { return c.relay.Dropped() }

// The admin API's view of the cluster.

func (c *clusterState) NodeID() string { return c.node.ID() }

func (c *clusterState) RemoteRooms(ctx context.Context) ([]rooms.RoomDetails, error) {
	list, err := c.states.Rooms(ctx)
	return list, adminError(err)
}

func (c *clusterState) RemoteRoom(ctx context.Context, name string) (rooms.RoomDetails, bool, error) {
	d, ok, err := c.states.Room(ctx, name)
	return d, ok, adminError(err)
}

// Locate finds the room's node by its placement, or, for a room placed
// nowhere (its node drains and released it, but still holds it), by the
// snapshots.
func (c *clusterState) Locate(ctx context.Context, room string) (string, string, error) {
	owner, err := c.node.Owner(ctx, room)
	if err != nil {
		return "", "", adminError(err)
	}
	if owner == "" || owner == c.node.ID() {
		d, ok, err := c.states.Room(ctx, room)
		if err != nil || !ok {
			return owner, "", adminError(err)
		}
		owner = d.Node
	}
	return c.urlOf(room, owner)
}

func (c *clusterState) Place(ctx context.Context, room string) (string, string, error) {
	owner, err := c.node.Place(ctx, room)
	if err != nil {
		return "", "", adminError(err)
	}
	if owner == c.node.ID() {
		return owner, "", nil
	}
	return c.urlOf(room, owner)
}

func (c *clusterState) urlOf(room, node string) (string, string, error) {
	info, ok := c.node.Node(node)
	if !ok || info.URL == "" {
		return node, "", fmt.Errorf("%w: room %q is on node %s, which this node does not see in the registry (or it has no URL)", admin.ErrNodeGone, room, node)
	}
	return node, info.URL, nil
}

func (c *clusterState) Nodes() []admin.NodeStatus {
	var out []admin.NodeStatus
	for _, i := range c.node.Nodes() {
		out = append(out, admin.NodeStatus{ID: i.ID, URL: i.URL, Started: i.Started, Heartbeat: i.Heartbeat, Rooms: i.Rooms,
			Participants: i.Participants, Tracks: i.Tracks, CPU: i.CPU, Draining: i.Draining})
	}
	return out
}

// adminError wraps the cluster's errors in the admin API's.
func adminError(err error) error {
	switch {
	case err == nil:
		return nil
	case errors.Is(err, cluster.ErrNoNode):
		return fmt.Errorf("%w: %v", admin.ErrNoNode, err)
	case errors.Is(err, cluster.ErrNodeGone):
		return fmt.Errorf("%w: %v", admin.ErrNodeGone, err)
	}
	return fmt.Errorf("%w: %v", admin.ErrClusterUnavailable, err)
}
