// Copyright 2026 The lpauth Authors
// SPDX-License-Identifier: Apache-2.0

// Command rotation measures a password rotation done the documented way
// under steady traffic: the password changed at CC, written to the file
// lpauth reads it from (`password {file.…}`), `caddy reload --force`;
// ROTATIONS times in a row.
//
//	go run ./bench/rotation [path/to/caddy]   (default: ./caddy, built by ./xcaddy.sh if missing)
//	bench/rotation.sh [path/to/caddy]         (the same)
//
// Two runs, each with a fresh CC emulator (httptest on 127.0.0.1, its
// control API on) and a fresh Caddy subprocess (lpauth with the emulator's
// demo user + reverse_proxy to the emulator's data API, which holds each
// request DELAY, so some are in flight at every reload). CLIENTS clients
// POST BODY-byte bodies back to back, each answer checked against the
// emulator's echo of the body; SETTLE of steady traffic before the first
// rotation and after each; GAP between the change at CC and the reload.
//
//	keep-sessions: CC keeps the user's live sessions at a password change
//	  (END_SESSIONS=false). Targets: 0 failed requests, logins = sessions
//	  ended by login = ROTATIONS (each new identity logs in once as its
//	  config starts, and CC, which keeps one session per user, ends the
//	  old identity's session then; the requests that held it are retried
//	  with the new one), 0 refused logins (the old identity never tries
//	  its old password).
//	end-sessions: CC ends them (END_SESSIONS=true). Between the change
//	  and the reload no session can be had, so the requests then fail
//	  (503 + Retry-After); the old identity tries its old password at most
//	  once per rotation, then backs off. Targets: every failed request
//	  overlapped a rotation and is a 503 (or a transport error: clients
//	  answered 503 at once are more often idle when the reload closes
//	  idle kept-alive connections), refused logins <= ROTATIONS, logins =
//	  ROTATIONS.
//
// Per run: requests, failed (by status), logins, sessions ended by a login,
// logouts, refused logins,
// data calls CC answered 401, the p99 of requests that overlapped no
// rotation, the worst latency of a request that overlapped each rotation
// (the change to 1 s after the reload) and their max, and how long each
// reload took. Exit status 0 when every target is met, 1 otherwise, 2 for
// a bad setting.
package main

import (
	"fmt"
	"maps"
	"net/http"
	"os"
	"slices"
	"strings"
	"time"

	"github.com/lpauth/caddy-lpauth/bench/internal/benchkit"
	"github.com/lpauth/caddy-lpauth/internal/rotation"
)

func main() { os.Exit(run()) }

func run() int {
	var o rotation.Options
	var errs [6]error
	o.Rotations, errs[0] = benchkit.EnvInt("ROTATIONS", 5)
	o.Clients, errs[1] = benchkit.EnvInt("CLIENTS", 8)
	o.BodySize, errs[2] = benchkit.EnvInt("BODY", 4096)
	o.Delay, errs[3] = benchkit.EnvDuration("DELAY", 50*time.Millisecond)
	o.Settle, errs[4] = benchkit.EnvDuration("SETTLE", 2*time.Second)
	o.Gap, errs[5] = envGap("GAP")
	bin, status := benchkit.Start("rotation", errs[:]...)
	if status != 0 {
		return status
	}
	o.Bin = bin
	o.Log = func(format string, args ...any) { fmt.Fprintf(os.Stderr, "rotation: "+format+"\n", args...) }

	benchkit.Header(fmt.Sprintf("go run ./bench/rotation  (ROTATIONS=%d CLIENTS=%d BODY=%d DELAY=%s SETTLE=%s GAP=%s)",
		o.Rotations, o.Clients, o.BodySize, o.Delay, o.Settle, o.Gap), bin)

	runs := []struct {
		name string
		end  bool
		res  rotation.Result
	}{{name: "keep-sessions"}, {name: "end-sessions", end: true}}
	for i := range runs {
		r := &runs[i]
		fmt.Fprintf(os.Stderr, "rotation: %s run (END_SESSIONS=%t)\n", r.name, r.end)
		o.EndSessions = r.end
		res, err := rotation.Run(o)
		if err != nil {
			fmt.Fprintf(os.Stderr, "rotation: %s run: %v\n", r.name, err)
			return 1
		}
		r.res = res
	}

	fmt.Printf("%d rotations per run, %d clients POSTing %d-byte bodies back to back, each held %s upstream;\n",
		o.Rotations, o.Clients, o.BodySize, o.Delay)
	fmt.Printf("%s of steady traffic before the first rotation and after each, %s from the change at CC to the reload.\n", o.Settle, o.Gap)
	fmt.Println("Times in ms. A rotation spans the change at CC to 1 s after the reload; worst = the slowest request")
	fmt.Println("overlapping it; outage = from the change to the end of its last failed request; replayed = POSTs the")
	fmt.Println("client sent again (Idempotency-Key) because Caddy closed their kept-alive connection at a reload.")
	fmt.Println()
	fmt.Println("| run | requests | failed | failed per rotation | outage per rotation | logins | ended by login | logouts | refused | upstream 401s | replayed | steady p99 | worst per rotation | max worst | reloads |")
	fmt.Println("|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|")
	for _, r := range runs {
		res := r.res
		fmt.Printf("| %s | %d | %s | %s | %s | %d | %d | %d | %d | %d | %d | %s | %s | %s | %s |\n", r.name, res.Requests, failed(res), ints(res.FailedIn),
			ms(res.Outage), res.Logins, res.EndedByLogin, res.Logouts, res.Refused, res.Unauthorized, res.Replayed, benchkit.Ms(res.SteadyP99),
			ms(res.Worst), benchkit.Ms(slices.Max(res.Worst)), ms(res.Reloads))
	}
	for _, r := range runs {
		if len(r.res.Failures) > 0 {
			fmt.Printf("\nfirst failures of the %s run:\n", r.name)
			for _, f := range r.res.Failures {
				fmt.Println("  " + f)
			}
		}
	}

	keep, end := runs[0].res, runs[1].res
	// With CC ending the sessions, clients get a 503 at once while no
	// session can be had. Answered that fast, their connections are idle
	// more often when the reload closes idle kept-alive ones, and a POST
	// already being written on one fails as a transport error (seen about
	// once per run); allowed here, never in the keep-sessions run.
	expected := end.FailedBy[http.StatusServiceUnavailable] + end.FailedBy[0]
	n := int64(o.Rotations)
	checks := []struct {
		what string
		ok   bool
		got  string
	}{
		{"keep-sessions: failed == 0", keep.Failed == 0, fmt.Sprint(keep.Failed)},
		{"keep-sessions: logins == sessions ended by login == ROTATIONS", keep.Logins == n && keep.EndedByLogin == n, fmt.Sprintf("%d, %d", keep.Logins, keep.EndedByLogin)},
		{"keep-sessions: refused logins == 0", keep.Refused == 0, fmt.Sprint(keep.Refused)},
		{"end-sessions: every failure a 503 (or transport error) in a rotation", expected == end.Failed && end.FailedOutside == 0,
			fmt.Sprintf("%d of %d, %d outside", expected, end.Failed, end.FailedOutside)},
		{"end-sessions: refused logins <= ROTATIONS", end.Refused <= n, fmt.Sprint(end.Refused)},
		{"end-sessions: logins == ROTATIONS", end.Logins == n, fmt.Sprint(end.Logins)},
	}
	fmt.Println()
	fmt.Println("Target check:")
	status = 0
	for _, c := range checks {
		fmt.Printf("  %-70s %s (%s)\n", c.what+":", benchkit.Yes(c.ok), c.got)
		if !c.ok {
			status = 1
		}
	}
	return status
}

// envGap reads GAP: a duration, and unlike the other settings 0 is allowed
// (the reload right after the change; the default).
func envGap(name string) (time.Duration, error) {
	if v := os.Getenv(name); v == "0" || v == "" {
		return 0, nil
	}
	return benchkit.EnvDuration(name, 0)
}

// failed writes the failed count with its statuses: 7 (503: 7).
func failed(r rotation.Result) string {
	if r.Failed == 0 {
		return "0"
	}
	var by []string
	for _, st := range slices.Sorted(maps.Keys(r.FailedBy)) {
		label := fmt.Sprint(st)
		switch st {
		case 0:
			label = "transport error"
		case http.StatusOK:
			label = "altered body"
		}
		by = append(by, fmt.Sprintf("%s: %d", label, r.FailedBy[st]))
	}
	return fmt.Sprintf("%d (%s)", r.Failed, strings.Join(by, ", "))
}

// ints writes counts space-separated.
func ints(ns []int) string {
	s := make([]string, len(ns))
	for i, n := range ns {
		s[i] = fmt.Sprint(n)
	}
	return strings.Join(s, " ")
}

// ms writes durations in milliseconds, space-separated.
func ms(ds []time.Duration) string {
	s := make([]string, len(ds))
	for i, d := range ds {
		s[i] = benchkit.Ms(d)
	}
	return strings.Join(s, " ")
}
