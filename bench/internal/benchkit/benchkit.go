// Copyright 2026 The lpauth Authors
// SPDX-License-Identifier: Apache-2.0

// Package benchkit is what the bench commands share on top of caddyproc:
// their start (settings, the binary) and the head of their report.
package benchkit

import (
	"fmt"
	"os"
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
