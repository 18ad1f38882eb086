// Package store is the Trellis control plane's embedded resource store.
//
// Objects are Kubernetes-style resources (apiVersion, kind, metadata, spec,
// status) kept as JSON in a single bbolt file under the key
// "kind/namespace/name". Every write bumps one global, monotonically
// increasing resource version (as in etcd) that is stored in the same
// transaction, so an acknowledged Apply or Delete is durable (fsynced) and
// atomic. Writes are validated twice: generic metadata rules (Kubernetes name
// and label syntax, namespace scoping) by the store, then kind-specific rules
// by the caller's Kinds.
//
// Watches are served from an in-memory ring of recent events. A watch that
// starts before the oldest remembered event fails with ErrGone and the caller
// relists; a watcher that stops reading has its channel closed rather than
// slowing writers down. The Store interface is what the control-plane servers
// depend on, so a Kubernetes-backed implementation can replace *DB later.
package store
