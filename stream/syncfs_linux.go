//go:build linux

package stream

import (
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strconv"
	"strings"

	"golang.org/x/sys/unix"
)

// syncFS writes every dirty page and inode of f's filesystem to disk and
// waits for it: one fsync for all the store's files at once, the block
// files nats-server appended to and the directories it created them in.
func syncFS(f *os.File) error {
	if err := syncfsReportsErrors(); err != nil {
		return err
	}
	for {
		err := unix.Syncfs(int(f.Fd()))
		if err != unix.EINTR {
			return err
		}
	}
}

// xfsMagic is XFS's statfs f_type.
const xfsMagic = 0x58465342

// ordersRenames refuses a filesystem that may commit a rename over a
// file before the new file's data: nats-server rewrites some of its
// files so (a compacted block, a consumer's state: a temporary file
// renamed over the old one), and fsyncs them itself only with
// SyncAlways, which group commit turns off. A power loss between the
// rename's commit and the data's write-back would leave an empty file
// where one stored durably before was. ext4 (auto_da_alloc, on by
// default) and btrfs write the data before such a rename; XFS does not.
func ordersRenames(f *os.File) error {
	var st unix.Statfs_t
	if err := unix.Fstatfs(int(f.Fd()), &st); err != nil {
		return fmt.Errorf("%w: the store's filesystem unknown: %v", ErrGroupSyncUnsupported, err)
	}
	if !renamesOrdered(int64(st.Type)) {
		return fmt.Errorf("%w: the store is on XFS, which may commit a rename over a file before the new file's data; nats-server rewrites files so and, under group commit, fsyncs them only with the rest", ErrGroupSyncUnsupported)
	}
	return nil
}

// renamesOrdered reports whether a filesystem of statfs type t writes a
// file's data before a rename over another file commits (see
// ordersRenames).
func renamesOrdered(t int64) bool { return t != xfsMagic }

// syncfsReportsErrors refuses a kernel older than 5.17. Before 5.8,
// syncfs returned 0 even when writing back failed; before 5.17 it still
// dropped the filesystem's own sync error (ext4's journal commit, XFS's log
// force, btrfs's transaction commit): the data written, the metadata that
// finds it not, and a lost write would pass for durable.
func syncfsReportsErrors() error {
	var u unix.Utsname
	if err := unix.Uname(&u); err != nil {
		return fmt.Errorf("%w: kernel version unknown: %v", ErrGroupSyncUnsupported, err)
	}
	release := unix.ByteSliceToString(u.Release[:])
	if !syncfsTrusted(release) {
		return fmt.Errorf("%w: Linux %s's syncfs does not report every write-back error (5.17 and later do)", ErrGroupSyncUnsupported, release)
	}
	return nil
}

// syncfsTrusted reports whether kernel release's syncfs reports both a
// failed write-back (5.8) and the filesystem's failed sync (5.17).
func syncfsTrusted(release string) bool { return kernelAtLeast(release, 5, 17) }

// kernelAtLeast reports whether a kernel release ("6.1.0-18-amd64")
// is major.minor or later; false when it does not parse.
func kernelAtLeast(release string, major, minor int) bool {
	parts := strings.SplitN(release, ".", 3)
	if len(parts) < 2 {
		return false
	}
	maj, err := strconv.Atoi(parts[0])
	if err != nil {
		return false
	}
	end := 0
	for end < len(parts[1]) && parts[1][end] >= '0' && parts[1][end] <= '9' {
		end++
	}
	mnr, err := strconv.Atoi(parts[1][:end])
	if err != nil {
		return false
	}
	return maj > major || maj == major && mnr >= minor
}

// dropCached drops the page cache's clean pages of every file under dir
// (dirty ones are written back instead, not dropped). After an fsync
// failed, Linux may keep the pages it could not write cached and marked
// clean, and a restarted store would read them back as if they were on
// disk: it starts from the disk instead.
//
// dir may be a symbolic link (to another disk): it is followed. An entry
// that cannot be read (a volume's root-owned lost+found) is skipped: it
// is none of nats-server's, which reads only what it wrote.
func dropCached(dir string) error {
	root, err := filepath.EvalSymlinks(dir)
	if err != nil {
		return err
	}
	return filepath.WalkDir(root, func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			if path == root {
				return err
			}
			return nil // unreadable: skipped (a directory's entries with it)
		}
		if !d.Type().IsRegular() {
			return nil
		}
		f, err := os.Open(path)
		if err != nil {
			return nil
		}
		defer f.Close()
		if err := unix.Fadvise(int(f.Fd()), 0, 0, unix.FADV_DONTNEED); err != nil {
			return fmt.Errorf("drop the cached pages of %s: %w", path, err)
		}
		return nil
	})
}
