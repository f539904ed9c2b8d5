// Copyright 2026 The lpauth Authors
// SPDX-License-Identifier: Apache-2.0

package caddyproc

import (
	"os"
	"strings"
	"testing"
	"time"
)

// A process that exits before it listens is reported at once, with what it
// printed, not after the listen timeout.
func TestLaunchSeesAnEarlyExit(t *testing.T) {
	port, err := FreePort()
	if err != nil {
		t.Fatal(err)
	}
	home := t.TempDir()
	start := time.Now()
	p, err := Launch("/bin/sh", Options{Args: []string{"-c", `echo "boom in $XDG_DATA_HOME"; exit 3`}, Home: home, WaitFor: Addr(port), Timeout: time.Minute})
	if p != nil || err == nil || !strings.Contains(err.Error(), "boom in "+home) || !strings.Contains(err.Error(), "exit status 3") {
		t.Fatalf("Launch: %v, %v", p, err)
	}
	if d := time.Since(start); d > 10*time.Second {
		t.Fatalf("the exit was seen after %s", d)
	}
}

// Stop is graceful: SIGINT, then the exit status; a process that will not
// stop is killed and said to be.
func TestStop(t *testing.T) {
	p, err := Launch("/bin/sh", Options{Args: []string{"-c", `trap 'exit 0' INT; echo ready; while :; do sleep 0.05; done`}})
	if err != nil {
		t.Fatal(err)
	}
	waitReady(t, p)
	if err := p.Stop(5 * time.Second); err != nil {
		t.Fatalf("Stop of a process that exits 0 on SIGINT: %v", err)
	}
	p, err = Launch("/bin/sh", Options{Args: []string{"-c", `trap '' INT; echo ready; while :; do sleep 0.05; done`}})
	if err != nil {
		t.Fatal(err)
	}
	waitReady(t, p)
	if err := p.Stop(300 * time.Millisecond); err == nil || !strings.Contains(err.Error(), "did not stop") {
		t.Fatalf("Stop of a process that ignores SIGINT: %v", err)
	}
	if exited, _ := p.Exited(); !exited {
		t.Fatal("still running after Stop gave up")
	}
}

// The Caddyfile keeps the layout tests rewrite line by line.
func TestProxyLayout(t *testing.T) {
	got := Proxy{Addr: "127.0.0.1:1", CSDS: "http://127.0.0.1:2", Upstream: "127.0.0.1:3", Lpauth: "login_timeout 1s", Global: "debug"}.Caddyfile()
	for _, want := range []string{
		"{\n\tadmin off\n\tpersist_config off\n\tauto_https off\n\tdefault_bind 127.0.0.1\n\tdebug\n}\n",
		"http://127.0.0.1:1 {\n\tlpauth {\n\t\taccount_id 12345678\n\t\tusername demo-agent\n\t\tpassword demo-password\n\t\tcsds http://127.0.0.1:2\n\t\tlogin_timeout 1s\n\t}\n\treverse_proxy 127.0.0.1:3\n}\n",
	} {
		if !strings.Contains(got, want) {
			t.Fatalf("no %q in\n%s", want, got)
		}
	}
}

func TestStatusKB(t *testing.T) {
	kb, err := StatusKB(os.Getpid(), "VmRSS")
	if err != nil || kb < 1024 {
		t.Fatalf("own VmRSS %d kB, %v", kb, err)
	}
	if _, err := StatusKB(os.Getpid(), "NoSuchField"); err == nil {
		t.Fatal("a missing field read as a value")
	}
}

func waitReady(t *testing.T, p *Proc) {
	t.Helper()
	for deadline := time.Now().Add(5 * time.Second); !strings.Contains(p.Out.String(), "ready"); time.Sleep(10 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("no ready line: %q", p.Out.String())
		}
	}
}
