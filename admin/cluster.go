package admin

import (
	"bytes"
	"context"
	"errors"
	"io"
	"net/http"
	"sort"
	"strings"
	"time"

	"github.com/parley-rtc/parley/rooms"
)

// Several nodes (docs/api.md, "Several nodes"): the API of any node lists
// every room of the cluster, from the snapshots the nodes share, and
// forwards an action on a room another node holds to that node, with the
// same token.

// Cluster is the rest of the cluster, as the API needs it.
type Cluster interface {
	// NodeID is this node's id.
	NodeID() string
	// RemoteRooms lists the rooms the other nodes hold, with their
	// participants, as they last reported them.
	RemoteRooms(ctx context.Context) ([]rooms.RoomDetails, error)
	// RemoteRoom is one room another node holds; ok is false when none
	// does.
	RemoteRoom(ctx context.Context, name string) (d rooms.RoomDetails, ok bool, err error)
	// Locate returns the node that holds a room that is not open here,
	// and the URL of its HTTP server; node is "" when no node holds it.
	Locate(ctx context.Context, room string) (node, url string, err error)
	// Place places a new room on a node (maybe this one) and returns it
	// and its URL.
	Place(ctx context.Context, room string) (node, url string, err error)
	// Nodes lists the live nodes.
	Nodes() []NodeStatus
}

// NodeStatus is one live node, as GET /api/nodes shows it.
type NodeStatus struct {
	ID           string  `json:"id"`
	URL          string  `json:"url"`
	Started      int64   `json:"started"`   // unix milliseconds
	Heartbeat    int64   `json:"heartbeat"` // unix milliseconds
	Rooms        int     `json:"rooms"`
	Participants int     `json:"participants"`
	Tracks       int     `json:"tracks"` // forwarded tracks
	CPU          float64 `json:"cpu"`    // share of all its cores, 0-1
	Draining     bool    `json:"draining"`
}

// Errors a Cluster wraps, so that the API can tell them apart.
var (
	// ErrClusterUnavailable is the shared state (Redis) not answering.
	ErrClusterUnavailable = errors.New("admin: the cluster's shared state (Redis) does not answer")
	// ErrNoNode is every live node full or draining.
	ErrNoNode = errors.New("admin: no node can take the room (every node is full or draining)")
	// ErrNodeGone is a node that holds the room but is not in the
	// registry any more (it stopped).
	ErrNodeGone = errors.New("admin: the room's node is not in the registry (it stopped)")
)

// forwardedHeader marks a request one node forwarded to another: it is
// answered where it arrives, never forwarded again.
const forwardedHeader = "X-Parley-Forwarded-By"

// forwardTimeout bounds a forwarded request.
const forwardTimeout = 5 * time.Second

func clusterError(err error) *apiError {
	switch {
	case errors.Is(err, ErrNoNode):
		return fail(http.StatusServiceUnavailable, "no_node", "%v", err)
	case errors.Is(err, ErrNodeGone):
		return fail(http.StatusBadGateway, "node_unavailable", "%v", err)
	}
	return fail(http.StatusServiceUnavailable, "cluster_unavailable", "%v", err)
}

// cluster is the Cluster when a request may involve other nodes: not for
// a single node, nor for a request another node forwarded here.
func (a *API) cluster(r *http.Request) Cluster {
	if r.Header.Get(forwardedHeader) != "" {
		return nil
	}
	return a.cfg.Cluster
}

// forwardRoom forwards a request on a room that is not open here to the
// node that holds it. It reports whether it answered the request; false
// leaves it to this node (a single node, a room open here or nowhere).
func (a *API) forwardRoom(w http.ResponseWriter, r *http.Request, room string) bool {
	c := a.cluster(r)
	if c == nil || a.cfg.Rooms.Room(room) != nil {
		return false
	}
	ctx, cancel := context.WithTimeout(r.Context(), 3*time.Second)
	defer cancel()
	node, url, err := c.Locate(ctx, room)
	if err != nil {
		writeError(w, clusterError(err))
		return true
	}
	if node == "" || node == c.NodeID() {
		return false
	}
	body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, maxBody))
	if err != nil {
		writeError(w, fail(http.StatusBadRequest, "bad_request", "body: %v", err))
		return true
	}
	a.forward(w, r, room, node, url, body)
	return true
}

// forward sends the request, with its token and body, to node at url and
// copies the answer.
func (a *API) forward(w http.ResponseWriter, r *http.Request, room, node, url string, body []byte) {
	ctx, cancel := context.WithTimeout(r.Context(), forwardTimeout)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, r.Method, strings.TrimRight(url, "/")+r.URL.RequestURI(), bytes.NewReader(body))
	if err != nil {
		writeError(w, fail(http.StatusBadGateway, "node_unavailable", "room %q is on node %s, whose URL %q is not usable: %v", room, node, url, err))
		return
	}
	req.Header.Set("Authorization", r.Header.Get("Authorization"))
	if ct := r.Header.Get("Content-Type"); ct != "" {
		req.Header.Set("Content-Type", ct)
	}
	req.Header.Set(forwardedHeader, a.cfg.Cluster.NodeID())
	resp, err := a.client.Do(req)
	if err != nil {
		a.cfg.Log.Warn("the node that holds a room does not answer a forwarded request", "room", room, "node", node, "url", url, "err", err)
		writeError(w, fail(http.StatusBadGateway, "node_unavailable",
			"room %q is on node %s (%s), which does not answer: %v", room, node, url, err))
		return
	}
	defer resp.Body.Close()
	for _, h := range []string{"Content-Type", "Cache-Control", "WWW-Authenticate"} {
		if v := resp.Header.Get(h); v != "" {
			w.Header().Set(h, v)
		}
	}
	w.Header().Set("X-Parley-Node", node)
	w.WriteHeader(resp.StatusCode)
	_, _ = io.Copy(w, io.LimitReader(resp.Body, 8<<20))
}

// allRooms is every room this API shows, by name: this node's, and with a
// cluster the other nodes' as they last reported them (a room open here
// is listed once, as here). A cluster that does not answer leaves this
// node's rooms, with why the list is incomplete.
func (a *API) allRooms(ctx context.Context, r *http.Request, full bool) (list []rooms.RoomDetails, incomplete error) {
	list = a.cfg.Rooms.AllRooms(full)
	c := a.cluster(r)
	if c == nil {
		return list, nil
	}
	here := make(map[string]bool, len(list))
	for i := range list {
		list[i].Node = c.NodeID()
		here[list[i].Name] = true
	}
	ctx, cancel := context.WithTimeout(ctx, 3*time.Second)
	defer cancel()
	remote, err := c.RemoteRooms(ctx)
	if err != nil {
		return list, err
	}
	for _, d := range remote {
		if here[d.Name] {
			continue
		}
		if !full {
			d.Participants = nil
		}
		list = append(list, d)
	}
	sort.SliceStable(list, func(i, j int) bool { return list[i].Name < list[j].Name })
	return list, nil
}

func (a *API) listNodes(w http.ResponseWriter, r *http.Request) {
	s, err := a.authorize(r, false)
	if err != nil {
		writeError(w, err)
		return
	}
	if s.room != "*" {
		writeError(w, fail(http.StatusForbidden, "forbidden", "the token is for room %q only; listing nodes needs a token for every room (*)", s.room))
		return
	}
	nodes := []NodeStatus{}
	if a.cfg.Cluster != nil {
		nodes = append(nodes, a.cfg.Cluster.Nodes()...)
	}
	writeJSON(w, http.StatusOK, map[string]any{"nodes": nodes})
}
