package cluster

import "errors"

var (
	// ErrBadConfig is a redis or cluster setting that cannot work.
	ErrBadConfig = errors.New("cluster: bad config")
	// ErrUnavailable is Redis not answering: nothing that needs the
	// shared state can be done until it does.
	ErrUnavailable = errors.New("cluster: Redis is unreachable")
	// ErrNoNode is every live node full or draining.
	ErrNoNode = errors.New("cluster: no node can take the room (every node is full or draining)")
	// ErrNodeGone is a node that does not listen any more.
	ErrNodeGone = errors.New("cluster: the node is not reachable")
	// ErrClosed is a pipe or node that was closed.
	ErrClosed = errors.New("cluster: closed")
)
