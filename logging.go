// Copyright 2026 The lpauth Authors
// SPDX-License-Identifier: Apache-2.0

package lpauth

import (
	"errors"
	"fmt"
	"time"

	"go.uber.org/zap"
)

// observer counts and logs what the keeper reports, in this config's log,
// and emits the session's changes of state as Caddy events (nil: none).
func (h *Handler) observer(events *eventEmitter, refreshInterval time.Duration) func(Event) {
	return func(ev Event) {
		recordEvent(ev)
		h.logEvent(ev)
		events.emit(ev)
		if ev.Kind == EventLogin && ev.Mode != AppJWTMode && ev.Lifetime > 0 && refreshInterval >= ev.Lifetime { // an AppJWT is renewed by its lifetime
			h.logger.Warn("refresh_interval is not below the session's idle lifetime CC announced; the session may expire between refreshes",
				zap.String("account_id", ev.Account), zap.Duration("refresh_interval", refreshInterval), zap.Duration("session_ttl", ev.Lifetime))
		}
	}
}

// logEvent logs what the keeper reports. No field carries a secret.
func (h *Handler) logEvent(ev Event) {
	fields := []zap.Field{
		zap.String("account_id", ev.Account),
		zap.String("login", ev.Mode),
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
		var apiErr *APIError
		if errors.As(ev.Err, &apiErr) {
			fields = append(fields, zap.Int("status", apiErr.StatusCode))
		}
	}
	switch ev.Kind {
	case EventLogin:
		h.logger.Info("logged in to CC", append(fields, zap.Bool("relogin", ev.Relogin))...)
	case EventLoginFailed:
		fields = append(fields, zap.Int("consecutive_failures", ev.Failures),
			zap.Time("next_attempt", ev.NextAttempt))
		if classify(ev.Err) == failConfig {
			h.logger.Error("CC login refused: check account_id, username and credentials; retrying slowly so the user is not locked", fields...)
		} else {
			h.logger.Warn("CC login failed", fields...)
		}
	case EventRefresh:
		h.logger.Debug("refreshed CC session", fields...)
	case EventRefreshFailed:
		h.logger.Warn("CC session refresh failed; will try again", fields...)
	case EventSessionLost:
		fields = append(fields, zap.Duration("lived", ev.Lived), zap.Bool("short_lived", ev.ShortLived))
		if !ev.ShortLived {
			h.logger.Warn("CC session is gone; logging in again", fields...)
			break
		}
		if !ev.NextAttempt.IsZero() {
			fields = append(fields, zap.Time("next_attempt", ev.NextAttempt))
		}
		h.logger.Error(shortLivedMessage(ev), fields...)
	case EventLogout:
		h.logger.Info("logged out of CC", fields...)
	case EventAdopted:
		h.logger.Info("adopted the cluster's CC session", fields...)
	case EventStoreFailed:
		h.logger.Warn("cluster storage failed; continuing on this instance's own", fields...)
	case EventLogoutFailed:
		var apiErr *APIError
		switch {
		case errors.As(ev.Err, &apiErr) && apiErr.StatusCode == 401:
			// The session had ended already: CC keeps one session per
			// user, and this user logged in since (a rotation's new
			// identity, usually). Nothing is wrong.
			h.logger.Debug("CC logout: the session had already ended", fields...)
		case apiErr != nil:
			h.logger.Warn("CC logout failed", fields...)
		default:
			// Typical at shutdown of a one-process demo, whose emulator
			// stops listening first.
			h.logger.Debug("CC logout failed", fields...)
		}
	}
}

// conflictWaitPhrase is how the log line says the conflict wait began.
const conflictWaitPhrase = "sessions keep ending, so no new login before"

// shortLivedMessage is the one line an operator reads when a session of a
// user ended soon after its login: the user, how long it lived, CC's
// answer, the likely cause and the fix.
func shortLivedMessage(ev Event) string {
	msg := fmt.Sprintf("session of %s ended %s after login (refresh: %v): CC keeps one session per user; "+
		"likely another client or another Caddy without shared storage is logged in as this user",
		ev.Username, ev.Lived.Round(time.Millisecond), ev.Err)
	if ev.Clustered {
		msg += ", or the cluster's storage fails, or its members differ in encryption_key"
	}
	if !ev.NextAttempt.IsZero() {
		msg += fmt.Sprintf("; %s %s (requests get 503 until then)", conflictWaitPhrase, ev.NextAttempt.UTC().Format(time.RFC3339))
	} else {
		msg += "; logging in again"
	}
	return msg
}
