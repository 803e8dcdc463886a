//go:build race

package sfu

// raceOn: the race detector's sync.Pool drops pooled items at random, so
// code that reuses through a pool (x/net's sendmmsg headers) allocates.
const raceOn = true
