//go:build linux

package stream

import (
	"bytes"
	"io"
	"os"
	"path/filepath"
	"testing"
	"unsafe"

	"github.com/rs/zerolog"
	"golang.org/x/sys/unix"
)

// Group commit trusts syncfs to report a failed write-back, which Linux
// does from 5.8 on, and the filesystem's own failed sync (ext4's journal
// commit, XFS's log force), which it dropped until 5.17: Debian 11's 5.10
// and Ubuntu 22.04's 5.15 answered 200s for callbacks whose metadata never
// reached the disk.
func TestGroupCommitNeedsAKernelThatReportsErrors(t *testing.T) {
	for release, want := range map[string]bool{
		"6.18.44-fc-v1272": true, "5.17.0": true, "6.1": true, "5.19.0-50-generic": true,
		"5.16.20": false, "5.15.0-91-generic": false, "5.10.0-28-amd64": false, "5.8.0": false,
		"5.7.19": false, "4.19.0-25-amd64": false, "3.10.0-1160.el7.x86_64": false, "": false, "x.y": false,
	} {
		if got := syncfsTrusted(release); got != want {
			t.Errorf("syncfsTrusted(%q) = %v, want %v", release, got, want)
		}
	}
}

// Group commit is refused on XFS: it may commit a rename over a file
// before the new file's data, and nats-server rewrites its compacted
// blocks and consumer states so, fsyncing them only with SyncAlways.
func TestGroupCommitIsRefusedOnXFS(t *testing.T) {
	for fs, want := range map[int64]bool{0x58465342: false, 0xEF53: true, 0x9123683E: true, 0x2fc12fc1: true} {
		if got := renamesOrdered(fs); got != want {
			t.Errorf("renamesOrdered(%#x) = %v, want %v", fs, got, want)
		}
	}
}

// residentPages is how many of path's pages are in the page cache.
func residentPages(t *testing.T, path string) int {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	st, _ := f.Stat()
	m, err := unix.Mmap(int(f.Fd()), 0, int(st.Size()), unix.PROT_READ, unix.MAP_SHARED)
	if err != nil {
		t.Fatal(err)
	}
	defer unix.Munmap(m)
	vec := make([]byte, (len(m)+os.Getpagesize()-1)/os.Getpagesize())
	if _, _, errno := unix.Syscall(unix.SYS_MINCORE, uintptr(unsafe.Pointer(&m[0])), uintptr(len(m)), uintptr(unsafe.Pointer(&vec[0]))); errno != 0 {
		t.Fatal(errno)
	}
	n := 0
	for _, v := range vec {
		n += int(v & 1)
	}
	return n
}

// After an fsync failed, Linux may keep the pages it could not write in
// its cache, marked clean. The relay then stops, and restarts; but a new
// process reads the store through the same cache: nats-server found the
// notification in it, rebuilt its duplicate window from it, and SenGo's
// retry was answered 200 duplicate for a notification that was never on
// disk (and is lost when the cache drops it or the power goes). The
// embedded store now drops its files' cached pages before nats-server
// reads them, so it starts from what is on disk.
func TestTheEmbeddedStoreStartsFromTheDiskNotTheCache(t *testing.T) {
	t.Run("a directory", func(t *testing.T) {
		dir := t.TempDir()
		startsFromTheDisk(t, dir, dir)
	})
	// A store dir that is a link to another disk's directory: the walk
	// did not follow it, and nothing was dropped.
	t.Run("a symbolic link", func(t *testing.T) {
		real, link := t.TempDir(), filepath.Join(t.TempDir(), "store")
		if err := os.Symlink(real, link); err != nil {
			t.Fatal(err)
		}
		startsFromTheDisk(t, real, link)
	})
}

// startsFromTheDisk caches a file in dir and starts the store at
// storeDir (dir, or a link to it): the file's pages must be dropped.
func startsFromTheDisk(t *testing.T, dir, storeDir string) {
	var fs unix.Statfs_t
	if unix.Statfs(dir, &fs) == nil && fs.Type == unix.TMPFS_MAGIC {
		t.Skip("the store is on tmpfs: its pages are the files, nothing to drop")
	}
	path := filepath.Join(dir, "cached")
	if err := os.WriteFile(path, bytes.Repeat([]byte("sengo"), 200_000), 0o600); err != nil {
		t.Fatal(err)
	}
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	if err := f.Sync(); err != nil { // clean pages, as after a failed write-back
		t.Fatal(err)
	}
	_, _ = io.Copy(io.Discard, f)
	f.Close()
	if residentPages(t, path) == 0 {
		t.Skip("this filesystem keeps no file in the page cache")
	}
	e, err := StartEmbedded(EmbeddedConfig{StoreDir: storeDir, Logger: zerolog.Nop()})
	if err != nil {
		t.Fatal(err)
	}
	defer e.Shutdown()
	if n := residentPages(t, path); n > 0 {
		t.Fatalf("%d pages of a store file still cached after the store started", n)
	}
}
