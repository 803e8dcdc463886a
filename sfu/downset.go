package sfu

import (
	"slices"
	"sync"
	"sync/atomic"
)

// downSet is a copy-on-write list of DownTracks (NOTES 11): the hot path
// loads it without a lock; a change copies it under mu.
type downSet struct {
	mu   sync.Mutex
	list atomic.Pointer[[]*DownTrack]
}

// load is the current list; never modify it.
func (s *downSet) load() []*DownTrack {
	if p := s.list.Load(); p != nil {
		return *p
	}
	return nil
}

func (s *downSet) has(d *DownTrack) bool { return slices.Contains(s.load(), d) }

// add puts d in the set, once.
func (s *downSet) add(d *DownTrack) {
	s.mu.Lock()
	defer s.mu.Unlock()
	old := s.load()
	if slices.Contains(old, d) {
		return
	}
	next := make([]*DownTrack, len(old), len(old)+1)
	copy(next, old)
	next = append(next, d)
	s.list.Store(&next)
}

// remove takes d out of the set.
func (s *downSet) remove(d *DownTrack) {
	s.mu.Lock()
	defer s.mu.Unlock()
	old := s.load()
	if !slices.Contains(old, d) {
		return
	}
	next := make([]*DownTrack, 0, len(old)-1)
	for _, x := range old {
		if x != d {
			next = append(next, x)
		}
	}
	s.list.Store(&next)
}
