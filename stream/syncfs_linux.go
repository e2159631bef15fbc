//go:build linux

package stream

import (
	"os"

	"golang.org/x/sys/unix"
)

// syncFS writes every dirty page and inode of f's filesystem to disk and
// waits for it: one fsync for all the store's files at once, the block
// files nats-server appended to and the directories it created them in.
func syncFS(f *os.File) error {
	for {
		err := unix.Syncfs(int(f.Fd()))
		if err != unix.EINTR {
			return err
		}
	}
}
