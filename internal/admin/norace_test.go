//go:build !race

package admin

// raceDetector: whether the tests run under the race detector.
const raceDetector = false
