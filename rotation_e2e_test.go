// Copyright 2026 The lpauth Authors
// SPDX-License-Identifier: Apache-2.0

package lpauth

import (
	"testing"
	"time"

	"github.com/lpauth/caddy-lpauth/internal/rotation"
)

// A password rotated the documented way (changed at CC, written to the file
// lpauth reads it from, `caddy reload --force`), three times under steady
// POST traffic through the built binary: no request fails, every body
// arrives intact, each new identity logs in once as its config starts, and
// each old session is logged out once its requests have finished; the old
// identity never tries its old password.
func TestE2EPasswordRotation(t *testing.T) {
	const rotations = 3
	res, err := rotation.Run(rotation.Options{
		Bin:       builtCaddy(t),
		Rotations: rotations,
		Clients:   4,
		BodySize:  2048,
		Delay:     100 * time.Millisecond, // requests are in flight at every reload
		Settle:    1500 * time.Millisecond,
		Log:       t.Logf,
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("%d requests, %d failed; steady p99 %s; worst during each rotation %v; reloads took %v",
		res.Requests, res.Failed, res.SteadyP99.Round(time.Millisecond), res.Worst, res.Reloads)
	if res.Failed != 0 {
		t.Errorf("%d of %d requests failed during the rotations: %v", res.Failed, res.Requests, res.Failures)
	}
	if res.Requests < 50 {
		t.Errorf("only %d requests: the traffic was not steady", res.Requests)
	}
	if res.Logins != rotations {
		t.Errorf("%d logins after the first, want %d (one per new identity)", res.Logins, rotations)
	}
	if res.Logouts != rotations {
		t.Errorf("%d logouts, want %d (one per old identity)", res.Logouts, rotations)
	}
	if res.Unauthorized != 0 {
		t.Errorf("CC answered %d data calls 401: an old session was logged out under its requests", res.Unauthorized)
	}
	if res.Refused != 0 {
		t.Errorf("CC refused %d logins: an old identity tried its old password", res.Refused)
	}
}
