//go:build !race

package platform

// raceDetector reports whether the tests run under -race.
const raceDetector = false
