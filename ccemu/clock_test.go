// Copyright 2026 The lpauth Authors
// SPDX-License-Identifier: Apache-2.0

package ccemu

import (
	"encoding/json"
	"sync"
	"testing"
	"time"
)

// fakeClock is a Clock whose time moves only when the test says so.
type fakeClock struct {
	mu  sync.Mutex
	now time.Time
}

func newFakeClock(t time.Time) *fakeClock { return &fakeClock{now: t} }

func (c *fakeClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.now
}

func (c *fakeClock) Advance(d time.Duration) {
	c.mu.Lock()
	c.now = c.now.Add(d)
	c.mu.Unlock()
}

// Every reading of the time comes from Config.Clock; injected delays still
// take real time.
func TestClockDrivesTimes(t *testing.T) {
	t.Parallel()
	// The documented envelope's example time, far from the real one.
	start := time.Date(2016, 9, 22, 16, 10, 15, 0, time.UTC)
	clk := newFakeClock(start)
	e, srv := newServer(t, Config{Clock: clk})

	s := mustLogin(t, srv, userBody())
	if got := s.raw["config"].(map[string]any)["serverCurrentTime"]; got != float64(start.UnixMilli()) {
		t.Errorf("serverCurrentTime %v, want the clock's %d", got, start.UnixMilli())
	}
	env := envelope(t, s.refresh(t, srv, "refresh", "bad"), 401, codeCSRF, "UNAUTHORIZED")
	if env["time"] != "Sep 22, 2016 4:10:15 PM" {
		t.Errorf("envelope time %v, want the clock's Sep 22, 2016 4:10:15 PM", env["time"])
	}

	clk.Advance(time.Hour)
	// A real delay: the clock does not move, yet the login takes 200ms.
	e.DelayNextLogins(1, 200*time.Millisecond)
	began := time.Now()
	mustLogin(t, srv, userBody())
	if el := time.Since(began); el < 200*time.Millisecond {
		t.Errorf("delayed login took %v of real time under a fake clock, want >= 200ms", el)
	}
	want := []time.Time{start, start.Add(time.Hour)}
	if got := e.LoginAttemptTimes(); len(got) != 2 || !got[0].Equal(want[0]) || !got[1].Equal(want[1]) {
		t.Errorf("LoginAttemptTimes %v, want %v", got, want)
	}
	r := do(t, "GET", srv.URL+"/_ccemu/counters", nil, nil)
	var c controlCounters
	if err := json.Unmarshal(r.body, &c); err != nil || r.status != 200 {
		t.Fatalf("counters: %d %s", r.status, r.body)
	}
	if len(c.LoginAttemptTimes) != 2 || c.LoginAttemptTimes[1] != "2016-09-22T17:10:15Z" {
		t.Errorf("control login_attempt_times %v", c.LoginAttemptTimes)
	}

	// Liveness is the clock's too: the first session's deadline has passed,
	// the second one's is reached but not passed. (By real time, far past
	// the fake one, both would be dead.)
	clk.Advance(DefaultSessionTTL)
	if n := e.Counters().LiveSessions; n != 1 {
		t.Errorf("LiveSessions %d at the second session's deadline, want 1", n)
	}
	if n := e.ExpireSessions(); n != 1 {
		t.Errorf("ExpireSessions found %d live sessions at the second one's deadline, want 1", n)
	}
}
