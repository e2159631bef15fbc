//go:build race

package main

// raceDetector: whether the tests run under the race detector.
const raceDetector = true
