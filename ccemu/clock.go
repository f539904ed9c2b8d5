// Copyright 2026 The lpauth Authors
// SPDX-License-Identifier: Apache-2.0

package ccemu

import "time"

// Clock is the emulator's source of the current time, a seam for tests:
// with a fake clock a test expires sessions (the idle TTL) and AppJWTs (the
// token lifetime), moves the rate-limit windows and fixes serverCurrentTime,
// the error envelope's time and the tokens' iat and exp without sleeping. The root package's keeper Clock also has Now, so
// one fake clock can drive both. It must be safe for concurrent use.
//
// Only readings of the time go through it: injected delays (DelayNextLogins,
// DelayNextTokens, the data API's ?delay=) model latency and always take real time.
type Clock interface {
	Now() time.Time
}

type realClock struct{}

func (realClock) Now() time.Time { return time.Now() }
