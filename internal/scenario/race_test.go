//go:build race

package scenario

// raceEnabled: the race detector makes the replay about five times slower.
const raceEnabled = true
