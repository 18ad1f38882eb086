package store

import (
	"bytes"
	"cmp"
	"context"
	"crypto/rand"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	bolt "go.etcd.io/bbolt"
	bolterrors "go.etcd.io/bbolt/errors"
	"k8s.io/apimachinery/pkg/labels"
)

// DB is the bbolt-backed Store.
type DB struct {
	bolt    *bolt.DB
	kinds   Kinds
	buf     int
	hub     *hub
	writeMu sync.Mutex // orders commit+publish so events leave in rv order
	rv      atomic.Uint64
}

var _ Store = (*DB)(nil)

// Open opens (creating if needed, mode 0600, parent dir 0700) the database file path, checking the schema version.
func Open(path string, o Options) (*DB, error) {
	if o.Kinds == nil {
		return nil, errors.New("store: Options.Kinds is required")
	}
	if o.WatchBuffer <= 0 {
		o.WatchBuffer = 1024
	}
	if o.HistorySize <= 0 {
		o.HistorySize = 10000
	}
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		return nil, fmt.Errorf("store: creating data directory: %w", err)
	}
	bdb, err := bolt.Open(path, 0o600, &bolt.Options{Timeout: time.Second})
	switch {
	case errors.Is(err, bolterrors.ErrTimeout):
		return nil, fmt.Errorf("store: %s is in use by another process: %w", path, err)
	case errors.Is(err, bolterrors.ErrInvalid), errors.Is(err, bolterrors.ErrVersionMismatch),
		errors.Is(err, bolterrors.ErrChecksum):
		return nil, fmt.Errorf("store: %s is not a valid trellis database file: %w", path, err)
	case err != nil:
		return nil, fmt.Errorf("store: opening %s: %w", path, err)
	}
	var rv uint64
	err = bdb.Update(func(tx *bolt.Tx) error {
		if err := migrate(tx, path); err != nil {
			return err
		}
		rv = binary.BigEndian.Uint64(tx.Bucket(bucketMeta).Get(keyRV))
		return nil
	})
	if err != nil {
		_ = bdb.Close()
		return nil, err
	}
	db := &DB{bolt: bdb, kinds: o.Kinds, buf: o.WatchBuffer, hub: newHub(rv, o.HistorySize)}
	db.rv.Store(rv)
	return db, nil
}

// Close ends all watches and closes the file.
func (db *DB) Close() error {
	db.writeMu.Lock()
	defer db.writeMu.Unlock()
	db.hub.close()
	if err := db.bolt.Close(); err != nil {
		return fmt.Errorf("store: closing: %w", err)
	}
	return nil
}

// ResourceVersion returns the store's current resource version.
func (db *DB) ResourceVersion() uint64 { return db.rv.Load() }

// Get implements Store.
func (db *DB) Get(ctx context.Context, k Key) (Resource, error) {
	if err := ctx.Err(); err != nil {
		return Resource{}, err
	}
	var r Resource
	err := db.bolt.View(func(tx *bolt.Tx) error {
		v := tx.Bucket(bucketResources).Get(k.dbKey())
		if v == nil {
			return fmt.Errorf("store: %s: %w", k, ErrNotFound)
		}
		return decode(v, &r)
	})
	return r, wrapClosed(err)
}

// List implements Store. kind "" lists every kind.
func (db *DB) List(ctx context.Context, kind, namespace string, sel labels.Selector) ([]Resource, uint64, error) {
	if err := ctx.Err(); err != nil {
		return nil, 0, err
	}
	prefix := ""
	if kind != "" {
		prefix = kind + "/"
		if namespace != "" {
			prefix += namespace + "/"
		}
	}
	var (
		out []Resource
		rv  uint64
	)
	err := db.bolt.View(func(tx *bolt.Tx) error {
		rv = binary.BigEndian.Uint64(tx.Bucket(bucketMeta).Get(keyRV))
		var err error
		out, err = scan(tx.Bucket(bucketResources), prefix, namespace, sel)
		return err
	})
	if err != nil {
		return nil, 0, wrapClosed(err)
	}
	slices.SortFunc(out, func(a, b Resource) int {
		return cmp.Or(strings.Compare(a.Metadata.Namespace, b.Metadata.Namespace),
			strings.Compare(a.Metadata.Name, b.Metadata.Name), strings.Compare(a.Kind, b.Kind))
	})
	return out, rv, nil
}

// scan returns the objects under prefix in namespace ("" any) that sel
// (nil: any) matches.
func scan(b *bolt.Bucket, prefix, namespace string, sel labels.Selector) ([]Resource, error) {
	var out []Resource
	c := b.Cursor()
	for k, v := c.Seek([]byte(prefix)); k != nil && bytes.HasPrefix(k, []byte(prefix)); k, v = c.Next() {
		var r Resource
		if err := decode(v, &r); err != nil {
			return nil, err
		}
		if namespace != "" && r.Metadata.Namespace != namespace {
			continue
		}
		if sel != nil && !sel.Matches(labels.Set(r.Metadata.Labels)) {
			continue
		}
		out = append(out, r)
	}
	return out, nil
}

// conflicts asks the kinds whether any of the batch's objects, written in
// b, conflicts with another of its namespace.
func (db *DB) conflicts(b *bolt.Bucket, batch []Resource) error {
	cc, ok := db.kinds.(ConflictChecker)
	if !ok {
		return nil
	}
	for i, r := range batch {
		k := r.Key()
		all, err := scan(b, k.Kind+"/"+k.Namespace+"/", k.Namespace, nil)
		if err != nil {
			return err
		}
		others := slices.DeleteFunc(all, func(o Resource) bool { return o.Key() == k })
		if err := cc.Conflict(r, others); err != nil {
			return &ItemError{i, fmt.Errorf("store: invalid %s: %w", k, err)}
		}
	}
	return nil
}

// Apply implements Store.
func (db *DB) Apply(ctx context.Context, in Resource) (Resource, error) {
	out, err := db.ApplyAll(ctx, []Resource{in})
	if err != nil {
		var ie *ItemError
		if errors.As(err, &ie) {
			return Resource{}, ie.Err
		}
		return Resource{}, err
	}
	return out[0], nil
}

// ApplyAll implements Store: one transaction, so a batch is written whole
// or not at all (a cancelled ctx before the commit writes nothing).
func (db *DB) ApplyAll(ctx context.Context, in []Resource) ([]Resource, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	rs := make([]Resource, len(in))
	for i := range in {
		r := in[i].clone()
		if err := Validate(&r, db.kinds); err != nil {
			return nil, &ItemError{i, fmt.Errorf("store: invalid %s: %w", r.Key(), err)}
		}
		if err := normalize(&r); err != nil {
			return nil, &ItemError{i, fmt.Errorf("store: invalid %s: %w", r.Key(), err)}
		}
		rs[i] = r
	}
	db.writeMu.Lock()
	defer db.writeMu.Unlock()
	out := make([]Resource, len(rs))
	var events []Event
	err := db.bolt.Update(func(tx *bolt.Tx) error {
		events = events[:0]
		b := tx.Bucket(bucketResources)
		for i, r := range rs {
			if err := ctx.Err(); err != nil {
				return err // the caller gave up: nothing of the batch is written
			}
			o, ev, err := db.applyTx(tx, b, r)
			if err != nil {
				return &ItemError{i, err}
			}
			out[i] = o
			if ev != nil {
				events = append(events, *ev)
			}
		}
		return db.conflicts(b, out)
	})
	if err != nil {
		return nil, wrapClosed(err)
	}
	for _, ev := range events {
		db.commitEvent(ev)
	}
	for i := range out {
		out[i] = out[i].clone()
	}
	return out, nil
}

// applyTx writes r in tx; the event is nil when nothing changed.
func (db *DB) applyTx(tx *bolt.Tx, b *bolt.Bucket, r Resource) (Resource, *Event, error) {
	k := r.Key()
	var old Resource
	v := b.Get(k.dbKey())
	if v != nil {
		if err := decode(v, &old); err != nil {
			return Resource{}, nil, err
		}
	}
	if want := r.Metadata.ResourceVersion; want != "" && (v == nil || want != old.Metadata.ResourceVersion) {
		return Resource{}, nil, fmt.Errorf("store: %s: resourceVersion %s does not match stored %q: %w",
			k, want, old.Metadata.ResourceVersion, ErrConflict)
	}
	var out Resource
	var evType EventType
	if v == nil {
		out, evType = r, Added
		out.Metadata.UID = newUID()
		out.Metadata.CreationTimestamp = time.Now().UTC().Truncate(time.Second)
		out.Metadata.Generation = 1
	} else {
		out, evType = old, Modified
		out.APIVersion = r.APIVersion
		out.Spec = r.Spec
		out.Metadata.Labels = r.Metadata.Labels
		out.Metadata.Annotations = r.Metadata.Annotations
		if r.Status != nil {
			out.Status = r.Status
		}
		if !bytes.Equal(old.Spec, out.Spec) {
			out.Metadata.Generation++
		}
		if sameContent(&old, &out) {
			return out, nil, nil
		}
	}
	rv, err := db.bump(tx)
	if err != nil {
		return Resource{}, nil, err
	}
	out.Metadata.ResourceVersion = strconv.FormatUint(rv, 10)
	data, err := json.Marshal(out)
	if err != nil {
		return Resource{}, nil, fmt.Errorf("store: encoding %s: %w", k, err)
	}
	if len(data) > MaxObjectBytes {
		return Resource{}, nil, fmt.Errorf("store: %s is %d bytes, more than the %d KiB an object may be: %w", k, len(data), MaxObjectBytes>>10, ErrTooLarge)
	}
	if err := b.Put(k.dbKey(), data); err != nil {
		return Resource{}, nil, err
	}
	return out, &Event{Type: evType, Object: out}, nil
}

// Delete implements Store.
func (db *DB) Delete(ctx context.Context, k Key) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	db.writeMu.Lock()
	defer db.writeMu.Unlock()
	var last Resource
	err := db.bolt.Update(func(tx *bolt.Tx) error {
		b := tx.Bucket(bucketResources)
		v := b.Get(k.dbKey())
		if v == nil {
			return fmt.Errorf("store: %s: %w", k, ErrNotFound)
		}
		if err := decode(v, &last); err != nil {
			return err
		}
		rv, err := db.bump(tx)
		if err != nil {
			return err
		}
		last.Metadata.ResourceVersion = strconv.FormatUint(rv, 10)
		return b.Delete(k.dbKey())
	})
	if err != nil {
		return wrapClosed(err)
	}
	db.commitEvent(Event{Type: Deleted, Object: last})
	return nil
}

// Watch implements Store.
func (db *DB) Watch(ctx context.Context, kind string, fromRV uint64) (<-chan Event, error) {
	return db.hub.watch(ctx, kind, fromRV, db.buf)
}

// bump increments and stores the global resource version inside tx.
func (db *DB) bump(tx *bolt.Tx) (uint64, error) {
	meta := tx.Bucket(bucketMeta)
	rv := binary.BigEndian.Uint64(meta.Get(keyRV)) + 1
	if err := meta.Put(keyRV, u64(rv)); err != nil {
		return 0, fmt.Errorf("store: writing resource version: %w", err)
	}
	return rv, nil
}

// commitEvent publishes a committed change. db.writeMu must be held.
func (db *DB) commitEvent(ev Event) {
	rv, _ := strconv.ParseUint(ev.Object.Metadata.ResourceVersion, 10, 64)
	db.rv.Store(rv)
	db.hub.publish(rv, ev)
}

// normalize puts spec and status in the exact form the JSON encoder stores,
// so that re-applying an identical object compares equal, and drops empty
// maps so that {} and nil are the same.
func normalize(r *Resource) error {
	for _, p := range []*json.RawMessage{&r.Spec, &r.Status} {
		if len(*p) == 0 {
			*p = nil
			continue
		}
		b, err := json.Marshal(*p)
		if err != nil {
			return fmt.Errorf("encoding spec/status: %w", err)
		}
		*p = b
	}
	if len(r.Metadata.Labels) == 0 {
		r.Metadata.Labels = nil
	}
	if len(r.Metadata.Annotations) == 0 {
		r.Metadata.Annotations = nil
	}
	return nil
}

// sameContent reports whether applying b over a would change nothing.
func sameContent(a, b *Resource) bool {
	return a.APIVersion == b.APIVersion && bytes.Equal(a.Spec, b.Spec) && bytes.Equal(a.Status, b.Status) &&
		maps.Equal(a.Metadata.Labels, b.Metadata.Labels) && maps.Equal(a.Metadata.Annotations, b.Metadata.Annotations)
}

// decode unmarshals a stored object.
func decode(v []byte, r *Resource) error {
	if err := json.Unmarshal(v, r); err != nil {
		return fmt.Errorf("store: decoding stored object: %w", err)
	}
	return nil
}

// wrapClosed turns bbolt's "database not open" into the store's own error.
func wrapClosed(err error) error {
	if errors.Is(err, bolterrors.ErrDatabaseNotOpen) {
		return fmt.Errorf("%w: %w", errClosed, err)
	}
	return err
}

// newUID returns a random RFC 4122 version 4 UUID.
func newUID() string {
	var b [16]byte
	_, _ = rand.Read(b[:]) // never fails since Go 1.24
	b[6] = b[6]&0x0f | 0x40
	b[8] = b[8]&0x3f | 0x80
	return fmt.Sprintf("%x-%x-%x-%x-%x", b[0:4], b[4:6], b[6:8], b[8:10], b[10:16])
}
