// Copyright 2026 The lpauth Authors
// SPDX-License-Identifier: Apache-2.0

package lpauth

import (
	"errors"
	"fmt"
	"time"

	"github.com/lpauth/caddy-lpauth/internal/cc"
	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
)

// What operators see of a keeper's events: each kind's log line, metric and
// Caddy event, described once, in eventTable.

// eventSpec is how one kind of event is shown.
type eventSpec struct {
	// log returns the level and message of its log line, and any fields
	// of its own; level zapcore.InvalidLevel logs nothing.
	log func(event) (zapcore.Level, string, []zap.Field)
	// count records it in the metrics (nil: none).
	count func(event)
	// caddyEvent is the Caddy event it emits ("" for none: not a change of
	// the session's state); data adds its own fields to the event's data.
	caddyEvent string
	data       func(event, map[string]any)
}

// eventTable describes every event kind. No log field, metric label or
// event datum carries a secret.
var eventTable = [...]eventSpec{
	eventLogin: {
		log: func(ev event) (zapcore.Level, string, []zap.Field) {
			return zapcore.InfoLevel, "logged in to CC", []zap.Field{zap.Bool("relogin", ev.Relogin)}
		},
		count:      countLogin,
		caddyEvent: caddyEventLogin,
		data:       func(ev event, d map[string]any) { d["replaced"] = ev.Relogin },
	},
	eventLoginFailed: {
		log: func(ev event) (zapcore.Level, string, []zap.Field) {
			fields := []zap.Field{zap.Int("consecutive_failures", ev.Failures), zap.Time("next_attempt", ev.NextAttempt)}
			if classify(ev.Err) == failConfig {
				return zapcore.ErrorLevel, "CC login refused: check account_id, username and credentials; retrying slowly so the user is not locked", fields
			}
			return zapcore.WarnLevel, "CC login failed", fields
		},
		count:      countLogin,
		caddyEvent: caddyEventLoginFailed,
		data: func(ev event, d map[string]any) {
			status := 0
			var apiErr *cc.APIError
			if errors.As(ev.Err, &apiErr) {
				status = apiErr.StatusCode
			}
			d["status"] = status
			d["consecutive_failures"] = ev.Failures
			// A string, not a time.Time: placeholders would show Go's
			// String() form, monotonic clock reading included.
			d["next_attempt"] = ev.NextAttempt.UTC().Format(time.RFC3339)
			d["reason"] = errText(ev.Err)
		},
	},
	eventRefresh: {
		log:   fixedLog(zapcore.DebugLevel, "refreshed CC session"),
		count: countRefresh,
	},
	eventRefreshFailed: {
		log:   fixedLog(zapcore.WarnLevel, "CC session refresh failed; will try again"),
		count: countRefresh,
	},
	eventSessionLost: {
		log: func(ev event) (zapcore.Level, string, []zap.Field) {
			fields := []zap.Field{zap.Duration("lived", ev.Lived), zap.Bool("short_lived", ev.ShortLived)}
			if !ev.ShortLived {
				return zapcore.WarnLevel, "CC session is gone; logging in again", fields
			}
			if !ev.NextAttempt.IsZero() {
				fields = append(fields, zap.Time("next_attempt", ev.NextAttempt))
			}
			return zapcore.ErrorLevel, shortLivedMessage(ev), fields
		},
		count: func(ev event) {
			countRefresh(ev)
			if ev.ShortLived {
				metricShortLived.WithLabelValues(ev.Account).Inc()
			}
		},
		caddyEvent: caddyEventSessionLost,
		data: func(ev event, d map[string]any) {
			d["lived_seconds"] = ev.Lived.Seconds()
			d["short_lived"] = ev.ShortLived
			if !ev.NextAttempt.IsZero() {
				d["next_attempt"] = ev.NextAttempt.UTC().Format(time.RFC3339)
			}
		},
	},
	eventLogout: {
		log:        fixedLog(zapcore.InfoLevel, "logged out of CC"),
		count:      countLogout,
		caddyEvent: caddyEventLogout,
	},
	eventLogoutFailed: {
		log: func(ev event) (zapcore.Level, string, []zap.Field) {
			var apiErr *cc.APIError
			switch {
			case errors.As(ev.Err, &apiErr) && apiErr.StatusCode == 401:
				// The session had ended already: CC keeps one session per
				// user, and this user logged in since (a rotation's new
				// identity, usually). Nothing is wrong.
				return zapcore.DebugLevel, "CC logout: the session had already ended", nil
			case apiErr != nil:
				return zapcore.WarnLevel, "CC logout failed", nil
			}
			// Typical at shutdown of a one-process demo, whose emulator
			// stops listening first.
			return zapcore.DebugLevel, "CC logout failed", nil
		},
		count: countLogout,
	},
	eventAdopted: {
		log:        fixedLog(zapcore.InfoLevel, "adopted the cluster's CC session"),
		caddyEvent: caddyEventAdopted,
	},
	eventStoreFailed: {
		log:        fixedLog(zapcore.WarnLevel, "cluster storage failed; continuing on this instance's own"),
		caddyEvent: caddyEventStoreFailed,
		data:       func(ev event, d map[string]any) { d["reason"] = errText(ev.Err) },
	},
}

func fixedLog(level zapcore.Level, msg string) func(event) (zapcore.Level, string, []zap.Field) {
	return func(event) (zapcore.Level, string, []zap.Field) { return level, msg, nil }
}

// specOf is ev's entry in eventTable; an unknown kind shows nothing.
func specOf(ev event) eventSpec {
	if int(ev.Kind) < len(eventTable) {
		return eventTable[ev.Kind]
	}
	return eventSpec{log: fixedLog(zapcore.InvalidLevel, "")}
}

// observer counts and logs what the keeper reports, in this config's log,
// and emits the session's changes of state as Caddy events (nil: none).
func (h *Handler) observer(events *eventEmitter, refreshInterval time.Duration) func(event) {
	return func(ev event) {
		spec := specOf(ev)
		if spec.count != nil {
			spec.count(ev)
		}
		h.logEvent(spec, ev)
		events.emit(spec, ev)
		if ev.Kind == eventLogin && ev.LoginKind != appJWTKind && ev.Lifetime > 0 && refreshInterval >= ev.Lifetime { // an AppJWT is renewed by its lifetime
			h.logger.Warn("refresh_interval is not below the session's idle lifetime CC announced; the session may expire between refreshes",
				zap.String("account_id", ev.Account), zap.Duration("refresh_interval", refreshInterval), zap.Duration("session_ttl", ev.Lifetime))
		}
		if ev.ClockSkew && (ev.Kind == eventLogin || ev.Kind == eventAdopted || ev.Kind == eventRefresh) {
			h.logger.Warn("suspected clock skew: by this host's clock the AppJWT's exp was under a minute away or already past, and Sentinel's reply gave no iat and no shorter expires_in; renewing the token a minute after each fetch. Check this host's clock",
				zap.String("account_id", ev.Account), zap.String("client_id", ev.Username))
		}
	}
}

// logEvent writes ev's log line: the fields every event has, then its own.
func (h *Handler) logEvent(spec eventSpec, ev event) {
	level, msg, own := spec.log(ev)
	if level == zapcore.InvalidLevel {
		return
	}
	ce := h.logger.Check(level, msg)
	if ce == nil {
		return
	}
	fields := []zap.Field{
		zap.String("account_id", ev.Account),
		zap.String("login", ev.LoginKind),
		zap.String("username", ev.Username),
	}
	if ev.Host != "" {
		fields = append(fields, zap.String("host", ev.Host))
	}
	if ev.Duration > 0 {
		fields = append(fields, zap.Duration("duration", ev.Duration))
	}
	if ev.Err != nil {
		fields = append(fields, zap.Error(ev.Err))
		var apiErr *cc.APIError
		if errors.As(ev.Err, &apiErr) {
			fields = append(fields, zap.Int("status", apiErr.StatusCode))
		}
	}
	ce.Write(append(fields, own...)...)
}

// ConflictWaitPhrase is how the log line says the conflict wait began.
// Exported for the tests of the built binary (e2e/), which look for it in
// caddy's log.
const ConflictWaitPhrase = "sessions keep ending, so no new login before"

// shortLivedMessage is the one line an operator reads when a session of a
// user ended soon after its login: the user, how long it lived, CC's
// answer, the likely cause and the fix.
func shortLivedMessage(ev event) string {
	msg := fmt.Sprintf("session of %s ended %s after login (refresh: %v): CC keeps one session per user; "+
		"likely another client or another Caddy without shared storage is logged in as this user",
		ev.Username, ev.Lived.Round(time.Millisecond), ev.Err)
	if ev.Clustered {
		msg += ", or the cluster's storage fails, or its members differ in encryption_key"
	}
	if !ev.NextAttempt.IsZero() {
		msg += fmt.Sprintf("; %s %s (requests get 503 until then)", ConflictWaitPhrase, ev.NextAttempt.UTC().Format(time.RFC3339))
	} else {
		msg += "; logging in again"
	}
	return msg
}

// errText is an error's text, which holds no secret: the same text the
// log lines carry.
func errText(err error) string {
	if err == nil {
		return ""
	}
	return err.Error()
}
