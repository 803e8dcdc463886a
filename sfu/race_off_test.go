//go:build !race

package sfu

const raceOn = false
