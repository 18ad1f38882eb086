package store

import (
	"encoding/binary"
	"fmt"

	bolt "go.etcd.io/bbolt"
)

var (
	bucketMeta      = []byte("meta")
	bucketResources = []byte("resources")
	keySchema       = []byte("schemaVersion")
	keyRV           = []byte("resourceVersion")
)

// migration upgrades a file from schema to-1 to schema to, inside one
// read-write transaction.
type migration struct {
	to    uint64
	apply func(tx *bolt.Tx) error
}

// migrations is ordered by to (consecutive from 1); the last entry is the
// schema this code reads and writes. Add a step here for every layout change.
var migrations = []migration{
	{to: 1, apply: func(tx *bolt.Tx) error {
		meta, err := tx.CreateBucketIfNotExists(bucketMeta)
		if err != nil {
			return err
		}
		if _, err := tx.CreateBucketIfNotExists(bucketResources); err != nil {
			return err
		}
		if meta.Get(keyRV) == nil {
			return meta.Put(keyRV, u64(0))
		}
		return nil
	}},
}

// schemaVersion is the on-disk layout this code reads and writes.
func schemaVersion() uint64 { return migrations[len(migrations)-1].to }

// migrate brings the file to schemaVersion(), refusing files from newer code.
// It runs in one transaction, so a failed migration leaves the file as it was.
func migrate(tx *bolt.Tx, path string) error {
	var have uint64
	if meta := tx.Bucket(bucketMeta); meta != nil {
		v := meta.Get(keySchema)
		if len(v) != 8 {
			return fmt.Errorf("store: %s: meta bucket has no valid schema version", path)
		}
		have = binary.BigEndian.Uint64(v)
	}
	if have > schemaVersion() {
		return fmt.Errorf("store: %s was written by a newer version of trellis (schema %d, this binary supports up to %d); "+
			"upgrade trellis or use another data directory", path, have, schemaVersion())
	}
	for _, m := range migrations {
		if m.to <= have {
			continue
		}
		if err := m.apply(tx); err != nil {
			return fmt.Errorf("store: %s: migrating to schema %d: %w", path, m.to, err)
		}
		meta := tx.Bucket(bucketMeta)
		if meta == nil {
			return fmt.Errorf("store: %s: migrating to schema %d: meta bucket missing", path, m.to)
		}
		if err := meta.Put(keySchema, u64(m.to)); err != nil {
			return fmt.Errorf("store: %s: migrating to schema %d: %w", path, m.to, err)
		}
	}
	return nil
}

// u64 encodes v as 8 big-endian bytes.
func u64(v uint64) []byte {
	return binary.BigEndian.AppendUint64(nil, v)
}
