// Copyright 2026 The lpauth Authors
// SPDX-License-Identifier: Apache-2.0

package cc

import "time"

// Clock is a source of time: the keeper's, and that of the Domain API
// answers' freshness; tests inject one to drive long schedules.
type Clock interface {
	Now() time.Time
	// AfterFunc calls f in its own goroutine after d and returns a
	// function that cancels the call.
	AfterFunc(d time.Duration, f func()) (stop func() bool)
}

// RealClock is the Clock of real time.
type RealClock struct{}

// Now is time.Now.
func (RealClock) Now() time.Time { return time.Now() }

// AfterFunc is time.AfterFunc.
func (RealClock) AfterFunc(d time.Duration, f func()) func() bool {
	return time.AfterFunc(d, f).Stop
}
