// Package reconciler is the pure core of gastown: the domain types of a town, the Snapshot
// a tick reads, the rules that turn a snapshot into Actions, and the invariants.
//
// Reconcile is a pure function of (snapshot, options, now): no clock, no I/O, no logger.
// It is level-based (controller-runtime style): it never asks which event arrived, only
// what the state is. Actions carry the preconditions they were derived from (expected
// status, expected hook) so the applier can skip an action that an earlier action of the
// same tick made stale (DESIGN.md §5 item 2).
//
// This package imports only the standard library.
package reconciler
