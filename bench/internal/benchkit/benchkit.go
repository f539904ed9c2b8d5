// Copyright 2026 The lpauth Authors
// SPDX-License-Identifier: Apache-2.0

// Package benchkit is what the bench commands share on top of caddyproc:
// their start (settings, the binary) and the head of their report.
package benchkit

import (
	"fmt"
	"io"
	"net/http"
	"os"
	"slices"
	"strconv"
	"time"

	"github.com/lpauth/caddy-lpauth/internal/caddyproc"
)

// Start makes an interrupt stop every caddy still running, and returns the
// binary to measure (the first argument, else ./caddy, built if missing).
// When a setting was bad (errs) or there is no binary, it says why on
// stderr, prefixed with name, and returns exit status 2.
func Start(name string, errs ...error) (bin string, status int) {
	caddyproc.StopOnInterrupt()
	for _, err := range errs {
		if err != nil {
			fmt.Fprintln(os.Stderr, name+":", err)
			return "", 2
		}
	}
	bin, err := caddyproc.Binary(os.Args[1:])
	if err != nil {
		fmt.Fprintln(os.Stderr, name+":", err)
		return "", 2
	}
	return bin, 0
}

// Header prints the command, the machine and the caddy version, as every
// report starts.
func Header(command, bin string) {
	fmt.Printf("command: %s\n", command)
	fmt.Printf("machine: %s\n", caddyproc.Machine())
	fmt.Printf("caddy:   %s\n\n", caddyproc.Version(bin))
}

// EnvInt reads a positive integer setting, def when unset.
func EnvInt(name string, def int) (int, error) {
	v := os.Getenv(name)
	if v == "" {
		return def, nil
	}
	n, err := strconv.Atoi(v)
	if err != nil || n < 1 {
		return 0, fmt.Errorf("%s=%q: want a positive integer", name, v)
	}
	return n, nil
}

// EnvDuration reads a positive duration setting, def when unset.
func EnvDuration(name string, def time.Duration) (time.Duration, error) {
	v := os.Getenv(name)
	if v == "" {
		return def, nil
	}
	d, err := time.ParseDuration(v)
	if err != nil || d <= 0 {
		return 0, fmt.Errorf("%s=%q: want a positive Go duration such as 200ms", name, v)
	}
	return d, nil
}

// Yes is how a report says a target was met.
func Yes(ok bool) string {
	if ok {
		return "yes"
	}
	return "NO"
}

// Get sends a GET, reads the whole answer and returns its status.
func Get(client *http.Client, url string) (int, error) {
	resp, err := client.Get(url)
	if err != nil {
		return 0, err
	}
	_, err = io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	return resp.StatusCode, err
}

// Median is the median of v (0 for none); v is left as it was.
func Median(v []float64) float64 {
	if len(v) == 0 {
		return 0
	}
	s := slices.Clone(v)
	slices.Sort(s)
	if len(s)%2 == 1 {
		return s[len(s)/2]
	}
	return (s[len(s)/2-1] + s[len(s)/2]) / 2
}

// Ms writes a duration in milliseconds with one decimal.
func Ms(d time.Duration) string { return strconv.FormatFloat(float64(d)/1e6, 'f', 1, 64) }

// Num writes a float as briefly as it reads exactly.
func Num(f float64) string { return strconv.FormatFloat(f, 'f', -1, 64) }
