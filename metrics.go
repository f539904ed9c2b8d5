// Copyright 2026 The lpauth Authors
// SPDX-License-Identifier: Apache-2.0

package lpauth

import (
	"context"
	"errors"
	"net"
	"time"

	"github.com/lpauth/caddy-lpauth/internal/cc"
	"github.com/prometheus/client_golang/prometheus"
)

// requestCounters are one handler's request-path counters, resolved at
// provision: looking a child up by its labels hashes them on every 401 or
// 503.
type requestCounters struct {
	upstream401, unavailable prometheus.Counter
	retries                  map[string]prometheus.Counter // by outcome
}

// retryOutcomes are the outcome labels of metricRetries.
var retryOutcomes = []string{"retried", "retried_late", "passed", "unavailable", "not_replayable", "large_401"}

func newRequestCounters(account string) *requestCounters {
	c := &requestCounters{
		upstream401: metricUpstream401.WithLabelValues(account),
		unavailable: metricUnavailable.WithLabelValues(account),
		retries:     make(map[string]prometheus.Counter, len(retryOutcomes)),
	}
	for _, o := range retryOutcomes {
		c.retries[o] = metricRetries.WithLabelValues(account, o)
	}
	return c
}

// The collectors are package-level so that counts survive `caddy reload`;
// each loaded config registers them into its own registry. Labels carry the
// account id and a result, never a user name or a secret.
var (
	metricLogins = prometheus.NewCounterVec(prometheus.CounterOpts{
		Namespace: "caddy", Subsystem: "lpauth", Name: "logins_total",
		Help: "Login attempts to CC's Login Service and AppJWT fetches from Sentinel, by result.",
	}, []string{"account_id", "result"})
	metricRefreshes = prometheus.NewCounterVec(prometheus.CounterOpts{
		Namespace: "caddy", Subsystem: "lpauth", Name: "refreshes_total",
		Help: "Session refreshes, by result (unauthorized: the session was gone).",
	}, []string{"account_id", "result"})
	metricLogouts = prometheus.NewCounterVec(prometheus.CounterOpts{
		Namespace: "caddy", Subsystem: "lpauth", Name: "logouts_total",
		Help: "Session logouts, by result.",
	}, []string{"account_id", "result"})
	metricUpstream401 = prometheus.NewCounterVec(prometheus.CounterOpts{
		Namespace: "caddy", Subsystem: "lpauth", Name: "upstream_unauthorized_total",
		Help: "401 answers from upstream to requests sent with the session's bearer.",
	}, []string{"account_id"})
	metricRetries = prometheus.NewCounterVec(prometheus.CounterOpts{
		Namespace: "caddy", Subsystem: "lpauth", Name: "retries_total",
		Help: "What became of requests that saw an upstream 401, by outcome: " +
			"retried (after a re-login), retried_late (the token had already been replaced), " +
			"passed (the endpoint's own 401, session alive), unavailable (answered 503), " +
			"not_replayable (body above retry_body_limit; the 401 went to the client), " +
			"large_401 (a 401 body above 64 KiB: the endpoint's own, streamed to the client, session not asked).",
	}, []string{"account_id", "outcome"})
	metricShortLived = prometheus.NewCounterVec(prometheus.CounterOpts{
		Namespace: "caddy", Subsystem: "lpauth", Name: "short_lived_sessions_total",
		Help: "Login Service sessions CC ended less than 60 s after their login: CC keeps one session per user, " +
			"so another client is probably logged in as the same user.",
	}, []string{"account_id"})
	metricStorageReads = prometheus.NewCounterVec(prometheus.CounterOpts{
		Namespace: "caddy", Subsystem: "lpauth", Name: "cluster_storage_reads_total",
		Help: "Reads of the cluster's stored credential (cluster mode): at start, on a 401, and every 5-20 ms while waiting for the storage lock.",
	}, []string{"account_id"})
	metricUnavailable = prometheus.NewCounterVec(prometheus.CounterOpts{
		Namespace: "caddy", Subsystem: "lpauth", Name: "unavailable_total",
		Help: "Requests answered 503 because no session could be had.",
	}, []string{"account_id"})
	metricLoginDuration = prometheus.NewHistogramVec(prometheus.HistogramOpts{
		Namespace: "caddy", Subsystem: "lpauth", Name: "login_duration_seconds",
		Help:    "Duration of login round trips and AppJWT fetches (Domain API lookup included), successful or not.",
		Buckets: []float64{.025, .05, .1, .25, .5, 1, 2.5, 5, 10, 30},
	}, []string{"account_id"})
	metricSessionAge = &sessionAgeCollector{desc: prometheus.NewDesc(
		"caddy_lpauth_session_age_seconds",
		"Age of the live CC session (the oldest one, if several identities share the account).",
		[]string{"account_id"}, nil)}
)

var collectors = []prometheus.Collector{
	metricLogins, metricRefreshes, metricLogouts, metricUpstream401, metricRetries,
	metricUnavailable, metricLoginDuration, metricSessionAge, metricShortLived, metricStorageReads,
}

// registerMetrics adds the collectors to a config's registry. A registry
// that already has them (a second lpauth in the same config) is fine.
func registerMetrics(reg *prometheus.Registry) error {
	if reg == nil {
		return nil
	}
	for _, c := range collectors {
		if err := reg.Register(c); err != nil {
			var dup prometheus.AlreadyRegisteredError
			if !errors.As(err, &dup) {
				return err
			}
		}
	}
	return nil
}

// The counts of eventTable's kinds.
func countLogin(ev event) {
	metricLogins.WithLabelValues(ev.Account, resultOf(ev.Err)).Inc()
	metricLoginDuration.WithLabelValues(ev.Account).Observe(ev.Duration.Seconds())
}

func countRefresh(ev event) {
	metricRefreshes.WithLabelValues(ev.Account, resultOf(ev.Err)).Inc()
}

func countLogout(ev event) {
	metricLogouts.WithLabelValues(ev.Account, resultOf(ev.Err)).Inc()
}

// resultOf names the outcome of a CC call for a metric label.
func resultOf(err error) string {
	if err == nil {
		return "ok"
	}
	var apiErr *cc.APIError
	if errors.As(err, &apiErr) {
		switch s := apiErr.StatusCode; {
		case s == 400:
			return "bad_request"
		case s == 401 || s == 403:
			return "unauthorized"
		case s == 429:
			return "rate_limited"
		case s == 451:
			return "blocked"
		case s >= 500:
			return "server_error"
		default:
			return "client_error"
		}
	}
	var timeout interface{ Timeout() bool }
	switch {
	case errors.Is(err, context.DeadlineExceeded), errors.As(err, &timeout) && timeout.Timeout():
		return "timeout"
	case errors.Is(err, context.Canceled), errors.Is(err, errClosed):
		return "canceled"
	}
	var netErr net.Error
	if errors.As(err, &netErr) {
		return "connection_error"
	}
	return "invalid_reply"
}

// sessionAgeCollector reads the live sessions at scrape time.
type sessionAgeCollector struct{ desc *prometheus.Desc }

func (c *sessionAgeCollector) Describe(ch chan<- *prometheus.Desc) { ch <- c.desc }

func (c *sessionAgeCollector) Collect(ch chan<- prometheus.Metric) {
	oldest := map[string]time.Time{}
	forEachKeeper(func(k *keeper) {
		if s := k.Current(); s != nil {
			acct := k.Identity().Account
			if t, ok := oldest[acct]; !ok || s.Obtained.Before(t) {
				oldest[acct] = s.Obtained
			}
		}
	})
	for acct, t := range oldest {
		ch <- prometheus.MustNewConstMetric(c.desc, prometheus.GaugeValue, time.Since(t).Seconds(), acct)
	}
}
