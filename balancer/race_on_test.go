//go:build race

package balancer

// raceEnabled: the race detector is on, and multiplies the memory a
// goroutine and an allocation cost, so RSS figures are not the product's.
const raceEnabled = true
