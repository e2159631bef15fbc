// Package examples holds small programs the README runs: each is what a
// merchant's own service would do, written against sengo-relay's public
// packages only.
package examples
