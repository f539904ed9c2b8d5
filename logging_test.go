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
		h.observer(nil, tc.interval)(event{Kind: eventLogin, Account: "1", Lifetime: tc.ttl})
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
		ev   event
		warn bool
	}{
		{event{Kind: eventLogin, LoginKind: appJWTKind, ClockSkew: true}, true},
		{event{Kind: eventAdopted, LoginKind: appJWTKind, ClockSkew: true}, true},
		{event{Kind: eventRefresh, LoginKind: appJWTKind, ClockSkew: true}, true},
		{event{Kind: eventLogin, LoginKind: appJWTKind, Lifetime: time.Hour}, false},
		{event{Kind: eventLoginFailed, LoginKind: appJWTKind}, false},
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
