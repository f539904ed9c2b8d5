// Copyright 2026 The lpauth Authors
// SPDX-License-Identifier: Apache-2.0

// Package caddyproc is what the Go benchmarks under bench/ share: finding
// (or building) the Caddy binary, running it as a subprocess on a Caddyfile
// with isolated XDG directories, free loopback ports, and reading a
// process's memory from /proc. Everything binds 127.0.0.1. Standard library
// only.
package caddyproc

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/lpauth/caddy-lpauth/ccemu"
)

const modulePath = "github.com/lpauth/caddy-lpauth"

// RepoRoot walks up from the working directory to this module's go.mod.
func RepoRoot() (string, error) {
	dir, err := os.Getwd()
	if err != nil {
		return "", err
	}
	for {
		b, err := os.ReadFile(filepath.Join(dir, "go.mod"))
		if err == nil && bytes.Contains(b, []byte("module "+modulePath+"\n")) {
			return dir, nil
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			return "", errors.New("not inside the " + modulePath + " checkout")
		}
		dir = parent
	}
}

// Binary returns the Caddy binary to benchmark: the first argument if
// given, else ./caddy at the repository root, built with ./xcaddy.sh when it
// is missing (the build's output goes to stderr).
func Binary(args []string) (string, error) {
	if len(args) > 0 && args[0] != "" {
		p, err := filepath.Abs(args[0])
		if err != nil {
			return "", err
		}
		if !isExecutable(p) {
			return "", fmt.Errorf("%s is not an executable file", args[0])
		}
		return p, nil
	}
	root, err := RepoRoot()
	if err != nil {
		return "", err
	}
	p := filepath.Join(root, "caddy")
	if isExecutable(p) {
		return p, nil
	}
	fmt.Fprintln(os.Stderr, "building ./caddy with ./xcaddy.sh (about a minute)")
	cmd := exec.Command(filepath.Join(root, "xcaddy.sh"), p)
	cmd.Dir = root
	cmd.Stdout, cmd.Stderr = os.Stderr, os.Stderr
	if err := cmd.Run(); err != nil {
		return "", fmt.Errorf("./xcaddy.sh: %w", err)
	}
	return p, nil
}

func isExecutable(p string) bool {
	fi, err := os.Stat(p)
	return err == nil && fi.Mode().IsRegular() && fi.Mode()&0o111 != 0
}

// Version is the binary's `caddy version` line.
func Version(bin string) string {
	out, err := exec.Command(bin, "version").Output()
	if err != nil {
		return "unknown (" + err.Error() + ")"
	}
	return strings.TrimSpace(string(out))
}

// Machine describes the CPU: model name and core count, no host name.
func Machine() string {
	model := "unknown CPU"
	if f, err := os.Open("/proc/cpuinfo"); err == nil {
		defer f.Close()
		sc := bufio.NewScanner(f)
		for sc.Scan() {
			if k, v, ok := strings.Cut(sc.Text(), ":"); ok && strings.TrimSpace(k) == "model name" {
				model = strings.TrimSpace(v)
				break
			}
		}
	}
	return fmt.Sprintf("%s, %d cores", model, runtime.NumCPU())
}

// FreePort returns a loopback port that was free a moment ago.
func FreePort() (int, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, err
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port, nil
}

// WaitPort waits until something accepts connections on addr.
func WaitPort(addr string, timeout time.Duration) error {
	deadline := time.Now().Add(timeout)
	for {
		c, err := net.DialTimeout("tcp", addr, time.Second)
		if err == nil {
			c.Close()
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("%s never accepted connections: %w", addr, err)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// Caddy is a running `caddy run` subprocess.
type Caddy struct {
	cmd  *exec.Cmd
	dir  string
	done chan struct{}
	err  error
}

// Start writes caddyfile to a fresh temporary directory, runs the binary on
// it with XDG_CONFIG_HOME and XDG_DATA_HOME inside that directory (nothing
// is written elsewhere), and waits until addr accepts connections.
func Start(bin, caddyfile, addr string) (*Caddy, error) {
	dir, err := os.MkdirTemp("", "lpauth-bench-")
	if err != nil {
		return nil, err
	}
	cfg := filepath.Join(dir, "Caddyfile")
	if err := os.WriteFile(cfg, []byte(caddyfile), 0o600); err != nil {
		os.RemoveAll(dir)
		return nil, err
	}
	logf, err := os.Create(filepath.Join(dir, "caddy.log"))
	if err != nil {
		os.RemoveAll(dir)
		return nil, err
	}
	defer logf.Close()
	cmd := exec.Command(bin, "run", "--config", cfg, "--adapter", "caddyfile")
	cmd.Dir = dir
	cmd.Env = append(os.Environ(), "XDG_CONFIG_HOME="+filepath.Join(dir, "xdg"), "XDG_DATA_HOME="+filepath.Join(dir, "xdg"))
	cmd.Stdout, cmd.Stderr = logf, logf
	// If the benchmark dies without cleaning up, the kernel ends Caddy too.
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		os.RemoveAll(dir)
		return nil, err
	}
	c := &Caddy{cmd: cmd, dir: dir, done: make(chan struct{})}
	go func() { c.err = cmd.Wait(); close(c.done) }()
	track(c, true)
	deadline := time.Now().Add(15 * time.Second)
	for {
		select {
		case <-c.done:
			tail := c.LogTail(20)
			os.RemoveAll(dir)
			return nil, fmt.Errorf("caddy exited at start (%v):\n%s", c.err, tail)
		default:
		}
		if conn, err := net.DialTimeout("tcp", addr, time.Second); err == nil {
			conn.Close()
			return c, nil
		}
		if time.Now().After(deadline) {
			tail := c.LogTail(20)
			c.Stop()
			return nil, fmt.Errorf("caddy never listened on %s:\n%s", addr, tail)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// Pid is the Caddy process's id.
func (c *Caddy) Pid() int { return c.cmd.Process.Pid }

// LogTail returns the last n lines Caddy wrote.
func (c *Caddy) LogTail(n int) string {
	b, _ := os.ReadFile(filepath.Join(c.dir, "caddy.log"))
	lines := strings.Split(strings.TrimRight(string(b), "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}

// Stop interrupts Caddy (a graceful stop, lpauth logs out), kills it if it
// is still running after 10 s, and removes its directory. Safe to call
// twice.
func (c *Caddy) Stop() {
	if c == nil {
		return
	}
	select {
	case <-c.done:
	default:
		_ = c.cmd.Process.Signal(os.Interrupt)
		select {
		case <-c.done:
		case <-time.After(10 * time.Second):
			_ = c.cmd.Process.Kill()
			<-c.done
		}
	}
	os.RemoveAll(c.dir)
	track(c, false)
}

var (
	mu      sync.Mutex
	running = map[*Caddy]bool{}
)

func track(c *Caddy, on bool) {
	mu.Lock()
	defer mu.Unlock()
	if on {
		running[c] = true
	} else {
		delete(running, c)
	}
}

// StopOnInterrupt makes SIGINT and SIGTERM stop every Caddy still running
// and exit with status 130.
func StopOnInterrupt() {
	ch := make(chan os.Signal, 1)
	signal.Notify(ch, os.Interrupt, syscall.SIGTERM)
	go func() {
		<-ch
		fmt.Fprintln(os.Stderr, "interrupted: stopping caddy")
		mu.Lock()
		cs := make([]*Caddy, 0, len(running))
		for c := range running {
			cs = append(cs, c)
		}
		mu.Unlock()
		for _, c := range cs {
			c.Stop()
		}
		os.Exit(130)
	}()
}

// Exited reports whether Caddy has stopped, and its exit error.
func (c *Caddy) Exited() (bool, error) {
	select {
	case <-c.done:
		return true, c.err
	default:
		return false, nil
	}
}

// StatusKB reads a "kB" field of /proc/<pid>/status, e.g. VmRSS or VmHWM
// (the peak resident set size over the process's life).
func StatusKB(pid int, field string) (int64, error) {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/status")
	if err != nil {
		return 0, err
	}
	for line := range strings.SplitSeq(string(b), "\n") {
		k, v, ok := strings.Cut(line, ":")
		if !ok || k != field {
			continue
		}
		num, _, _ := strings.Cut(strings.TrimSpace(v), " ")
		return strconv.ParseInt(num, 10, 64)
	}
	return 0, fmt.Errorf("no %s in /proc/%d/status", field, pid)
}

// ProxyCaddyfile is the proxy the benchmarks measure: lpauth with the
// emulator's demo user, logging in through csds, in front of
// reverse_proxy to upstream (host:port). extra goes inside the lpauth
// block.
func ProxyCaddyfile(addr, csds, upstream, extra string) string {
	return fmt.Sprintf(`{
	admin off
	persist_config off
	auto_https off
	default_bind 127.0.0.1
}
http://%s {
	lpauth {
		account_id %s
		username %s
		password %s
		csds %s
		%s
	}
	reverse_proxy %s
}
`, addr, ccemu.DefaultAccountID, ccemu.DefaultUsername, ccemu.DefaultPassword, csds, extra, upstream)
}
