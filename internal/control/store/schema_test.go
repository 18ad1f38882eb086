package store

import (
	"context"
	"crypto/rand"
	"encoding/binary"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	bolt "go.etcd.io/bbolt"
)

// readSchema returns the schema version stored in the (closed) file at path.
func readSchema(t *testing.T, path string) uint64 {
	t.Helper()
	bdb, err := bolt.Open(path, 0o600, &bolt.Options{ReadOnly: true, Timeout: time.Second})
	if err != nil {
		t.Fatal(err)
	}
	defer bdb.Close()
	var v uint64
	if err := bdb.View(func(tx *bolt.Tx) error {
		v = binary.BigEndian.Uint64(tx.Bucket(bucketMeta).Get(keySchema))
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	return v
}

// writeSchema overwrites the schema version in the (closed) file at path.
func writeSchema(t *testing.T, path string, v uint64) {
	t.Helper()
	bdb, err := bolt.Open(path, 0o600, &bolt.Options{Timeout: time.Second})
	if err != nil {
		t.Fatal(err)
	}
	defer bdb.Close()
	if err := bdb.Update(func(tx *bolt.Tx) error { return tx.Bucket(bucketMeta).Put(keySchema, u64(v)) }); err != nil {
		t.Fatal(err)
	}
}

func TestOpenFreshFileGetsCurrentSchema(t *testing.T) {
	path := filepath.Join(t.TempDir(), "store.db")
	db := openTest(t, path, Options{})
	if err := db.Close(); err != nil {
		t.Fatal(err)
	}
	if got := readSchema(t, path); got != 1 || schemaVersion() != 1 {
		t.Errorf("schema = %d (code %d), want 1", got, schemaVersion())
	}
}

func TestOpenRefusesNewerSchema(t *testing.T) {
	path := filepath.Join(t.TempDir(), "store.db")
	_ = openTest(t, path, Options{}).Close()
	writeSchema(t, path, schemaVersion()+1)
	_, err := Open(path, Options{Kinds: fakeKinds{}})
	if err == nil || !strings.Contains(err.Error(), "written by a newer version") {
		t.Fatalf("Open = %v, want a 'newer version' error", err)
	}
	if got := readSchema(t, path); got != schemaVersion()+1 {
		t.Errorf("refused open rewrote schema to %d", got)
	}
}

func TestOpenMigratesOlderSchema(t *testing.T) {
	path := filepath.Join(t.TempDir(), "store.db")
	db := openTest(t, path, Options{})
	w := mustApply(t, db, widget("ns", "w", 1, nil))
	_ = db.Close()

	saved := migrations
	t.Cleanup(func() { migrations = saved })
	migrations = append(migrations[:len(migrations):len(migrations)], migration{to: 2, apply: func(tx *bolt.Tx) error {
		_, err := tx.CreateBucketIfNotExists([]byte("v2"))
		return err
	}})
	db = openTest(t, path, Options{})
	if got, err := db.Get(context.Background(), w.Key()); err != nil || got.Metadata.UID != w.Metadata.UID {
		t.Errorf("object after migration: %+v, %v", got, err)
	}
	_ = db.Close()
	if got := readSchema(t, path); got != 2 {
		t.Errorf("schema after migration = %d, want 2", got)
	}
}

func TestOpenErrors(t *testing.T) {
	dir := t.TempDir()

	garbage := filepath.Join(dir, "garbage.db")
	junk := make([]byte, 64<<10)
	_, _ = rand.Read(junk)
	if err := os.WriteFile(garbage, junk, 0o600); err != nil {
		t.Fatal(err)
	}
	text := filepath.Join(dir, "text.db")
	if err := os.WriteFile(text, []byte("hello, this is not a database\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	for _, p := range []string{garbage, text} {
		if _, err := Open(p, Options{Kinds: fakeKinds{}}); err == nil || !strings.Contains(err.Error(), "not a valid trellis database") {
			t.Errorf("Open(%s) = %v, want a 'not a valid database' error", filepath.Base(p), err)
		}
	}

	if _, err := Open(filepath.Join(dir, "x.db"), Options{}); err == nil {
		t.Error("Open without Kinds succeeded")
	}

	locked := filepath.Join(dir, "locked.db")
	_ = openTest(t, locked, Options{})
	start := time.Now()
	_, err := Open(locked, Options{Kinds: fakeKinds{}})
	if err == nil || !strings.Contains(err.Error(), "is in use by another process") {
		t.Errorf("second Open = %v, want an 'in use' error", err)
	}
	if d := time.Since(start); d > 5*time.Second {
		t.Errorf("second Open took %v", d)
	}
}
