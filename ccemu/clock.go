// Copyright 2026 The lpauth Authors
// SPDX-License-Identifier: Apache-2.0

package ccemu

import "time"

// Clock is the emulator's source of the current time, a seam for tests:
// with a fake clock a test expires sessions (the idle TTL), moves the login
// rate-limit window and fixes serverCurrentTime and the error envelope's
// time without sleeping. The root package's keeper Clock also has Now, so
// one fake clock can drive both. It must be safe for concurrent use.
//
// Only readings of the time go through it: injected delays (DelayNextLogins,
// the data API's ?delay=) model latency and always take real time.
type Clock interface {
	Now() time.Time
}

type realClock struct{}

func (realClock) Now() time.Time { return time.Now() }
