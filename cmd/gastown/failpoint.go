package main

import "context"

// chaosFailpoint is nil in the normal build. The chaos build (go build -tags chaos, see
// chaos.go) sets it: the workers then kill their own process with SIGKILL at the point of
// a tick or side-effect job named by GASTOWN_CHAOS_KILL_AT, for the crash tests.
var chaosFailpoint func() (func(ctx context.Context, stage, townID string) error, error)
