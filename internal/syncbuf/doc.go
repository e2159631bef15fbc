// Package syncbuf is a buffer a logger and a test can share: tests hand it
// to zerolog and read what was logged while the code under test still
// writes.
package syncbuf
