// Copyright 2026 The lpauth Authors
// SPDX-License-Identifier: Apache-2.0

package e2e

import (
	"testing"
	"time"

	"github.com/lpauth/caddy-lpauth/internal/rotation"
)

// A password rotated the documented way (changed at CC, written to the file
// lpauth reads it from, `caddy reload --force`), three times under steady
// POST traffic through the built binary: no request fails, every body
// arrives intact, each new identity logs in once as its config starts, and
// the old identity never tries its old password. CC keeps one session per
// user, so each new login ends the old session: the requests that held it
// get a 401 from CC, each retried once with the new session.
func TestE2EPasswordRotation(t *testing.T) {
	e2eTier(t)
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
	t.Logf("%d requests, %d failed; %d upstream 401s (retried); steady p99 %s; worst during each rotation %v; reloads took %v",
		res.Requests, res.Failed, res.Unauthorized, res.SteadyP99.Round(time.Millisecond), res.Worst, res.Reloads)
	if res.Failed != 0 {
		t.Errorf("%d of %d requests failed during the rotations: %v", res.Failed, res.Requests, res.Failures)
	}
	if res.Requests < 50 {
		t.Errorf("only %d requests: the traffic was not steady", res.Requests)
	}
	if res.Logins != rotations {
		t.Errorf("%d logins after the first, want %d (one per new identity)", res.Logins, rotations)
	}
	if res.EndedByLogin != rotations || res.Logouts != 0 {
		t.Errorf("%d sessions ended by a login, %d logged out; want %d and 0 (each new login ends the old session)", res.EndedByLogin, res.Logouts, rotations)
	}
	// At most the requests in flight at each new login meet the ended
	// session, once each.
	if res.Unauthorized > 4*rotations {
		t.Errorf("CC answered %d data calls 401, more than the %d requests in flight at the new logins", res.Unauthorized, 4*rotations)
	}
	if res.Refused != 0 {
		t.Errorf("CC refused %d logins: an old identity tried its old password", res.Refused)
	}
}
