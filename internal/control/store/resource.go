package store

import (
	"context"
	"encoding/json"
	"errors"
	"maps"
	"slices"
	"time"

	"k8s.io/apimachinery/pkg/labels"
)

// Resource is one Kubernetes-style object.
type Resource struct {
	APIVersion string          `json:"apiVersion"`
	Kind       string          `json:"kind"`
	Metadata   Metadata        `json:"metadata"`
	Spec       json.RawMessage `json:"spec,omitempty"`
	Status     json.RawMessage `json:"status,omitempty"`
}

// Metadata is the identifying and store-managed part of a Resource.
type Metadata struct {
	Name              string            `json:"name"`
	Namespace         string            `json:"namespace,omitempty"`
	Labels            map[string]string `json:"labels,omitempty"`
	Annotations       map[string]string `json:"annotations,omitempty"`
	UID               string            `json:"uid,omitempty"`
	ResourceVersion   string            `json:"resourceVersion,omitempty"` // decimal uint64, set by the store
	Generation        int64             `json:"generation,omitempty"`      // +1 whenever spec changes
	CreationTimestamp time.Time         `json:"creationTimestamp,omitempty"`
}

// Key returns the identity of r.
func (r *Resource) Key() Key {
	return Key{Kind: r.Kind, Namespace: r.Metadata.Namespace, Name: r.Metadata.Name}
}

// clone returns a deep copy of r, so that callers and watchers never share
// maps or byte slices with the store.
func (r Resource) clone() Resource {
	r.Metadata.Labels = maps.Clone(r.Metadata.Labels)
	r.Metadata.Annotations = maps.Clone(r.Metadata.Annotations)
	r.Spec = slices.Clone(r.Spec)
	r.Status = slices.Clone(r.Status)
	return r
}

// Key identifies a Resource. Namespace is empty for cluster-scoped kinds.
type Key struct{ Kind, Namespace, Name string }

// String returns "Kind/namespace/name", or "Kind/name" for cluster-scoped keys.
func (k Key) String() string {
	if k.Namespace == "" {
		return k.Kind + "/" + k.Name
	}
	return k.Kind + "/" + k.Namespace + "/" + k.Name
}

// dbKey is the bbolt key: always three parts so that prefix scans by kind
// and by kind+namespace work.
func (k Key) dbKey() []byte {
	return []byte(k.Kind + "/" + k.Namespace + "/" + k.Name)
}

// Kinds decides which kinds exist and checks objects before they are written.
type Kinds interface {
	// Check validates r (it may fill defaults in r.Spec). Errors must name the field, e.g.
	// `spec.ports[0].port: must be between 1 and 65535`. Unknown kinds return an error naming the kind.
	Check(r *Resource) error
	// Namespaced reports whether kind lives in namespaces (false for unknown kinds).
	Namespaced(kind string) bool
	// Known reports whether the store holds objects of kind.
	Known(kind string) bool
}

// ConflictChecker is implemented by Kinds some of whose objects may not
// coexist in a namespace (two Servers for one port of the same
// workloads). The store asks it within the transaction that writes r, of
// r and the other objects of r's kind in r's namespace, the batch's
// included; an error refuses the whole batch.
type ConflictChecker interface {
	Conflict(r Resource, others []Resource) error
}

// MaxObjectBytes bounds one stored object, encoded (etcd's request limit
// is about 1.5 MiB).
const MaxObjectBytes = 1 << 20

// ItemError is a batch's failure: which object (its index), and why.
type ItemError struct {
	Index int
	Err   error
}

func (e *ItemError) Error() string { return e.Err.Error() }
func (e *ItemError) Unwrap() error { return e.Err }

// Sentinel errors. The store wraps them with %w and the affected key, so
// test for them with errors.Is.
var (
	// ErrTooLarge means an object is larger than MaxObjectBytes.
	ErrTooLarge = errors.New("object too large")
	// ErrNotFound means the object does not exist.
	ErrNotFound = errors.New("not found")
	// ErrConflict means the caller's resourceVersion is not the stored one.
	ErrConflict = errors.New("conflict: object has been modified")
	// ErrGone means a watch asked for events the store no longer remembers.
	ErrGone = errors.New("resource version too old")
)

// ValidationError is returned (wrapped) for any invalid object; Field is e.g. "metadata.name".
// Field is empty when a Kinds.Check error did not come as a ValidationError;
// its message is then the whole Reason.
type ValidationError struct{ Field, Reason string }

// Error implements error as "field: reason".
func (e *ValidationError) Error() string {
	if e.Field == "" {
		return e.Reason
	}
	return e.Field + ": " + e.Reason
}

// EventType says what happened to an object.
type EventType string

// The event types, as in the Kubernetes watch API.
const (
	Added    EventType = "ADDED"
	Modified EventType = "MODIFIED"
	Deleted  EventType = "DELETED"
)

// Event is one change delivered by Watch. Object.Metadata.ResourceVersion is
// the event's resource version; for Deleted, Object is the last stored state.
type Event struct {
	Type   EventType
	Object Resource
}

// Store is the interface the control-plane servers use; a Kubernetes backend can implement it later.
type Store interface {
	// Get returns the object stored under k, or an error wrapping ErrNotFound.
	Get(ctx context.Context, k Key) (Resource, error)
	// List returns the objects of kind (in namespace, or all if namespace == ""), matching sel (nil = everything),
	// sorted by namespace then name, and the store's resource version at that moment.
	List(ctx context.Context, kind, namespace string, sel labels.Selector) ([]Resource, uint64, error)
	// Apply creates or replaces r (kubectl-apply-like full replace of spec, labels, annotations; status kept unless r.Status is set).
	// If r.Metadata.ResourceVersion is non-empty and differs from the stored one -> ErrConflict (optimistic concurrency).
	// It sets uid (random, on create), creationTimestamp (on create), resourceVersion, generation; returns the stored object.
	// Applying an identical object is a no-op: no new rv, no event.
	Apply(ctx context.Context, r Resource) (Resource, error)
	// ApplyAll applies every object of rs as Apply does, all or none: on an
	// error (an *ItemError naming the object at fault, or ctx's) nothing
	// was written.
	ApplyAll(ctx context.Context, rs []Resource) ([]Resource, error)
	// Delete removes the object stored under k, or returns an error wrapping ErrNotFound.
	Delete(ctx context.Context, k Key) error
	// Watch delivers, in order, every event of kind with rv > fromRV. If fromRV is older than what the store still
	// remembers, it returns ErrGone (the caller relists). The channel is closed when ctx ends or when the watcher falls
	// too far behind (its buffer is full) — Apply and Delete NEVER block on a slow watcher. kind "" means all kinds.
	Watch(ctx context.Context, kind string, fromRV uint64) (<-chan Event, error)
}

// Options configures Open.
type Options struct {
	// Kinds validates objects and says which kinds are namespaced. Required.
	Kinds Kinds
	// WatchBuffer is each watcher's channel capacity (default 1024); HistorySize is how many recent events are kept
	// in memory for watches that start in the past (default 10000).
	WatchBuffer, HistorySize int
}
