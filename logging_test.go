// Copyright 2026 The lpauth Authors
// SPDX-License-Identifier: Apache-2.0

package lpauth

import (
	"testing"
	"time"

	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
	"go.uber.org/zap/zaptest/observer"
)

// A refresh_interval that is not below the session's idle lifetime CC
// announced lets the session expire between refreshes: say so at login.
func TestLoginWarnsWhenRefreshIntervalReachesSessionTTL(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		interval, ttl time.Duration
		warn          bool
	}{
		{time.Hour, 30 * time.Minute, true},
		{time.Hour, time.Hour, true},
		{5 * time.Minute, 8 * time.Hour, false},
		{5 * time.Minute, 0, false}, // CC announced none
	} {
		core, logs := observer.New(zapcore.InfoLevel)
		h := &Handler{logger: zap.New(core)}
		h.observer(nil, tc.interval)(Event{Kind: EventLogin, Account: "1", Lifetime: tc.ttl})
		warned := logs.FilterMessageSnippet("refresh_interval is not below").Len() == 1
		if warned != tc.warn {
			t.Errorf("refresh_interval %s, sessionTTl %s: warned %v, want %v", tc.interval, tc.ttl, warned, tc.warn)
		}
		if logs.FilterMessage("logged in to CC").Len() != 1 {
			t.Errorf("the login itself was not logged")
		}
	}
}

// An AppJWT whose end rests on this host's clock alone and came within a
// minute (or had passed) is logged as suspected clock skew, at each fetch.
func TestClockSkewWarning(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		ev   Event
		warn bool
	}{
		{Event{Kind: EventLogin, Mode: AppJWTMode, ClockSkew: true}, true},
		{Event{Kind: EventAdopted, Mode: AppJWTMode, ClockSkew: true}, true},
		{Event{Kind: EventRefresh, Mode: AppJWTMode, ClockSkew: true}, true},
		{Event{Kind: EventLogin, Mode: AppJWTMode, Lifetime: time.Hour}, false},
		{Event{Kind: EventLoginFailed, Mode: AppJWTMode}, false},
	} {
		core, logs := observer.New(zapcore.WarnLevel)
		h := &Handler{logger: zap.New(core)}
		h.observer(nil, time.Hour)(tc.ev)
		warned := logs.FilterMessageSnippet("clock skew").FilterLevelExact(zapcore.WarnLevel).Len() == 1
		if warned != tc.warn {
			t.Errorf("%s, clock skew %v: warned %v, want %v", tc.ev.Kind, tc.ev.ClockSkew, warned, tc.warn)
		}
	}
}
