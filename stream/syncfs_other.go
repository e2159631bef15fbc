//go:build !linux

package stream

import "os"

// syncFS is not available: group commit is refused and the relay uses
// nats-server's own SyncAlways.
func syncFS(*os.File) error { return ErrGroupSyncUnsupported }

// dropCached does nothing here: the store is read through the cache.
func dropCached(string) error { return nil }

// ordersRenames is not checked here: syncFS refuses group commit anyway.
func ordersRenames(*os.File) error { return nil }
