// Copyright 2026 The lpauth Authors
// SPDX-License-Identifier: Apache-2.0

package lpauth

import (
	"errors"
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
		h.logger.Warn("CC session is gone; logging in again", fields...)
	case EventLogout:
		h.logger.Info("logged out of CC", fields...)
	case EventAdopted:
		h.logger.Info("adopted the cluster's CC session", fields...)
	case EventStoreFailed:
		h.logger.Warn("cluster storage failed; continuing on this instance's own", fields...)
	case EventLogoutFailed:
		var apiErr *APIError
		if errors.As(ev.Err, &apiErr) {
			h.logger.Warn("CC logout failed", fields...)
		} else {
			// Typical at shutdown of a one-process demo, whose emulator
			// stops listening first.
			h.logger.Debug("CC logout failed", fields...)
		}
	}
}
