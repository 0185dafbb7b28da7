// Package jobs runs gastown on River: the tick_town worker and the Ticker that implements
// one tick (shared with the API's dry-run), the side-effect workers of the outbox, the
// periodic sweep that finds due towns, and the Events front door that appends facts and
// wakes their town.
package jobs
