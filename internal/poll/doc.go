// Package poll owns the one way tests wait for an outcome: check a
// condition repeatedly until it holds or a deadline passes. Tests never
// sleep for a fixed time to wait for something to happen.
//
// Only tests import it.
package poll
