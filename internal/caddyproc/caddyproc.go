// Copyright 2026 The lpauth Authors
// SPDX-License-Identifier: Apache-2.0

// Package caddyproc is the kit the end-to-end tests and the Go benchmarks
// under bench/ share: finding or building the Caddy binary with ./xcaddy.sh,
// free loopback ports, running `caddy` as a subprocess with isolated XDG
// directories until it listens, stopping it gracefully, the Caddyfiles they
// run, and reading a process's memory from /proc. Everything binds
// 127.0.0.1. Nothing here ends a test: it returns errors, so it may run on
// goroutines of its own. Standard library and ccemu only.
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
)

const modulePath = "github.com/lpauth/caddy-lpauth"

// BinaryEnv names an existing binary to use instead of building one.
const BinaryEnv = "LPAUTH_CADDY_BIN"

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

// Build runs ./xcaddy.sh output at the repository root, with kv added to its
// environment, and returns what it printed.
func Build(output string, kv ...string) ([]byte, error) {
	root, err := RepoRoot()
	if err != nil {
		return nil, err
	}
	cmd := exec.Command(filepath.Join(root, "xcaddy.sh"), output)
	cmd.Dir = root
	cmd.Env = append(os.Environ(), kv...)
	out, err := cmd.CombinedOutput()
	if err != nil {
		return out, fmt.Errorf("./xcaddy.sh: %w\n%s", err, out)
	}
	return out, nil
}

var (
	builtOnce sync.Once
	builtBin  string
	builtErr  error
)

// Built returns the binary the end-to-end tests run: $LPAUTH_CADDY_BIN if
// set, else one ./xcaddy.sh builds, with Redis storage for the cluster
// tests, into a temporary directory once per process.
func Built() (string, error) {
	builtOnce.Do(func() {
		if bin := os.Getenv(BinaryEnv); bin != "" {
			builtBin = bin
			return
		}
		dir, err := os.MkdirTemp("", "lpauth-caddy-")
		if err != nil {
			builtErr = err
			return
		}
		builtBin = filepath.Join(dir, "caddy")
		_, builtErr = Build(builtBin, "LPAUTH_WITH_REDIS=1")
	})
	return builtBin, builtErr
}

// Binary returns the Caddy binary a benchmark runs: the first argument if
// given, else ./caddy at the repository root, built with ./xcaddy.sh when it
// is missing (a note goes to stderr: it takes about a minute).
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
	if _, err := Build(p); err != nil {
		return "", err
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

// Addr is the loopback address of port.
func Addr(port int) string { return "127.0.0.1:" + strconv.Itoa(port) }

// WaitPort waits until something accepts connections on addr.
func WaitPort(addr string, timeout time.Duration) error {
	return waitListening(addr, timeout, nil)
}

// waitListening dials addr until it answers, the deadline passes, or exited
// (when not nil) is closed.
func waitListening(addr string, timeout time.Duration, exited <-chan struct{}) error {
	deadline := time.Now().Add(timeout)
	for {
		c, err := net.DialTimeout("tcp", addr, 100*time.Millisecond)
		if err == nil {
			c.Close()
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("nothing accepted connections on %s within %s: %w", addr, timeout, err)
		}
		select {
		case <-exited:
			return errExited
		case <-time.After(10 * time.Millisecond):
		}
	}
}

var errExited = errors.New("exited")

// Env is this process's environment with caddy's config, data and home
// directories in home (so that nothing is written elsewhere), then kv.
func Env(home string, kv ...string) []string {
	env := append(os.Environ(), "XDG_CONFIG_HOME="+home, "XDG_DATA_HOME="+home, "HOME="+home)
	return append(env, kv...)
}

// Output collects what a process prints; safe to read while it writes.
type Output struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (o *Output) Write(p []byte) (int, error) {
	o.mu.Lock()
	defer o.mu.Unlock()
	return o.b.Write(p)
}

func (o *Output) String() string {
	o.mu.Lock()
	defer o.mu.Unlock()
	return o.b.String()
}

// Tail is the last n lines written.
func (o *Output) Tail(n int) string {
	lines := strings.Split(strings.TrimRight(o.String(), "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}

// Options says how to run caddy.
type Options struct {
	// Args are caddy's arguments. With Caddyfile set and no Args:
	// run --config <that file> --adapter caddyfile.
	Args []string
	// Caddyfile, when set, is written to Home/Caddyfile.
	Caddyfile string
	// Home holds the Caddyfile and, unless Env is given, caddy's XDG
	// directories. Empty: a fresh temporary directory, removed once the
	// process has exited.
	Home string
	// Env is the whole environment; nil is Env(Home).
	Env []string
	// WaitFor is the host:port Launch waits for; empty: it does not wait.
	WaitFor string
	// Timeout bounds the wait; zero is 15 s.
	Timeout time.Duration
	// DieWithParent has the kernel kill caddy when the thread that started
	// it exits (Linux). Right for a benchmark's main program; in a test
	// binary a thread may end with a locked goroutine and kill caddy
	// mid-test, and the test's cleanup stops it anyway.
	DieWithParent bool
}

// Proc is a running caddy process.
type Proc struct {
	Cmd  *exec.Cmd
	Out  *Output // what it printed, stdout and stderr
	done chan struct{}
	err  error
}

// Launch starts caddy and waits until it listens on o.WaitFor. If the
// process exits first, Launch says so at once, with what it printed; if it
// never listens, Launch kills it.
func Launch(bin string, o Options) (*Proc, error) {
	home, tmp := o.Home, ""
	if home == "" {
		var err error
		if tmp, err = os.MkdirTemp("", "lpauth-caddy-run-"); err != nil {
			return nil, err
		}
		home = tmp
	}
	removeTmp := func() {
		if tmp != "" {
			os.RemoveAll(tmp)
		}
	}
	args := o.Args
	if o.Caddyfile != "" {
		cfg := filepath.Join(home, "Caddyfile")
		if err := os.WriteFile(cfg, []byte(o.Caddyfile), 0o600); err != nil {
			removeTmp()
			return nil, err
		}
		if args == nil {
			args = []string{"run", "--config", cfg, "--adapter", "caddyfile"}
		}
	}
	env := o.Env
	if env == nil {
		env = Env(home)
	}
	cmd := exec.Command(bin, args...)
	cmd.Env = env
	out := &Output{}
	cmd.Stdout, cmd.Stderr = out, out
	if o.DieWithParent {
		cmd.SysProcAttr = dieWithParent()
	}
	if err := cmd.Start(); err != nil {
		removeTmp()
		return nil, err
	}
	p := &Proc{Cmd: cmd, Out: out, done: make(chan struct{})}
	go func() {
		p.err = cmd.Wait()
		removeTmp()
		track(p, false)
		close(p.done)
	}()
	track(p, true)
	if o.WaitFor == "" {
		return p, nil
	}
	timeout := o.Timeout
	if timeout == 0 {
		timeout = 15 * time.Second
	}
	switch err := waitListening(o.WaitFor, timeout, p.done); {
	case err == errExited:
		return nil, fmt.Errorf("caddy %v exited (%v) before listening on %s:\n%s", args, p.err, o.WaitFor, out.String())
	case err != nil:
		p.Kill()
		return nil, fmt.Errorf("caddy %v: %v; it printed:\n%s", args, err, out.Tail(40))
	}
	return p, nil
}

// Start runs `caddy run` on caddyfile with isolated directories and waits
// until addr accepts connections: what a benchmark does, so caddy dies with
// the benchmark.
func Start(bin, caddyfile, addr string) (*Proc, error) {
	return Launch(bin, Options{Caddyfile: caddyfile, WaitFor: addr, DieWithParent: true})
}

// Pid is the process id.
func (p *Proc) Pid() int { return p.Cmd.Process.Pid }

// Done is closed once the process has exited.
func (p *Proc) Done() <-chan struct{} { return p.done }

// Err is how the process exited; valid once Done is closed.
func (p *Proc) Err() error { return p.err }

// Exited reports whether the process has stopped, and its exit error.
func (p *Proc) Exited() (bool, error) {
	select {
	case <-p.done:
		return true, p.err
	default:
		return false, nil
	}
}

// Stop sends SIGINT, as Ctrl-C does (a graceful stop: lpauth logs out),
// and waits within for the exit. It returns the exit error, or, when caddy
// is still running after within, kills it and says so.
func (p *Proc) Stop(within time.Duration) error {
	_ = p.Cmd.Process.Signal(syscall.SIGINT)
	select {
	case <-p.done:
		if p.err != nil {
			return fmt.Errorf("caddy exited with %v", p.err)
		}
		return nil
	case <-time.After(within):
		p.Kill()
		return fmt.Errorf("caddy did not stop within %s", within)
	}
}

// Kill ends the process at once and waits for it.
func (p *Proc) Kill() {
	_ = p.Cmd.Process.Kill()
	<-p.done
}

var (
	mu      sync.Mutex
	running = map[*Proc]bool{}
)

func track(p *Proc, on bool) {
	mu.Lock()
	defer mu.Unlock()
	if on {
		running[p] = true
	} else {
		delete(running, p)
	}
}

// StopOnInterrupt makes SIGINT and SIGTERM stop every caddy still running
// and exit with status 130.
func StopOnInterrupt() {
	ch := make(chan os.Signal, 1)
	signal.Notify(ch, os.Interrupt, syscall.SIGTERM)
	go func() {
		<-ch
		fmt.Fprintln(os.Stderr, "interrupted: stopping caddy")
		mu.Lock()
		ps := make([]*Proc, 0, len(running))
		for p := range running {
			ps = append(ps, p)
		}
		mu.Unlock()
		for _, p := range ps {
			_ = p.Stop(10 * time.Second)
		}
		os.Exit(130)
	}()
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

// Percentile is the nearest-rank percentile of sorted values, for the
// benchmarks and the tests that report latency.
func Percentile(sorted []time.Duration, p int) time.Duration {
	i := (len(sorted)*p+99)/100 - 1
	return sorted[max(i, 0)]
}
