// Copyright 2026 The lpauth Authors
// SPDX-License-Identifier: Apache-2.0

package e2e

// End-to-end tests of what a reload of the built binary may change. A
// failed reload is made to fail after lpauth was provisioned: a
// reverse_proxy whose CA file is missing comes after lpauth in the same
// route list, and routes are provisioned in order. Everything here is seen
// from outside: HTTP answers, the emulator's counters and what caddy
// prints.

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"fmt"
	"io"
	"math/big"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/lpauth/caddy-lpauth/ccemu"
)

// reloadConfig is one instance's Caddyfile: its admin API and site on
// loopback, lpauth in front of reverse_proxy to the emulator.
type reloadConfig struct {
	admin, port int
	emu         *httptest.Server
	password    string   // lpauth's password; empty is {env.LP_PASSWORD}
	settings    []string // lines inside the lpauth block
	storage     string   // a storage block inside the lpauth block, or ""
	missingCA   string   // when set, the proxy after lpauth fails to provision on this file
}

func (c reloadConfig) with(settings ...string) reloadConfig {
	c.settings = settings
	return c
}

// failing is c whose reverse_proxy, after lpauth, fails to provision.
func (c reloadConfig) failing(t *testing.T) reloadConfig {
	c.missingCA = filepath.Join(t.TempDir(), "missing-ca.pem")
	return c
}

func (c reloadConfig) caddyfile() string {
	upstream := c.emu.Listener.Addr().String()
	proxy := "\treverse_proxy " + upstream + "\n"
	if c.missingCA != "" {
		proxy = fmt.Sprintf("\treverse_proxy %s {\n\t\ttransport http {\n\t\t\ttls_trust_pool file %s\n\t\t}\n\t}\n", upstream, c.missingCA)
	}
	var b strings.Builder
	fmt.Fprintf(&b, "{\n\tadmin 127.0.0.1:%d\n\tpersist_config off\n\tauto_https off\n\tdefault_bind 127.0.0.1\n}\n", c.admin)
	fmt.Fprintf(&b, "http://127.0.0.1:%d {\n\tlpauth {\n", c.port)
	password := c.password
	if password == "" {
		password = "{env.LP_PASSWORD}"
	}
	fmt.Fprintf(&b, "\t\taccount_id %s\n\t\tusername %s\n\t\tpassword %s\n\t\tcsds %s\n", ccemu.DefaultAccountID, ccemu.DefaultUsername, password, c.emu.URL)
	for _, s := range c.settings {
		b.WriteString("\t\t" + s + "\n")
	}
	if c.storage != "" {
		b.WriteString(c.storage)
	}
	b.WriteString("\t}\n" + proxy + "}\n")
	return b.String()
}

// redisStorage is a storage block for inside lpauth, so that the storage
// module instance belongs to lpauth's config. Each call is a cluster of its
// own on the shared server.
func redisStorage(t *testing.T) string {
	prefix := fmt.Sprintf("lpauth-reload-%d", time.Now().UnixNano())
	return fmt.Sprintf("\t\tstorage redis {\n\t\t\taddress %s\n\t\t\tkey_prefix %s\n\t\t}\n", redisAddr(t), prefix)
}

// reloadInstance is a running caddy whose config a test replaces through
// the admin API.
type reloadInstance struct {
	proc *caddyProc
	cfg  reloadConfig
	url  string
}

func newReloadConfig(t *testing.T, emu *httptest.Server, settings ...string) reloadConfig {
	return reloadConfig{admin: freePort(t), port: freePort(t), emu: emu, settings: settings}
}

// startReloadInstances starts one caddy per config, at once.
func startReloadInstances(t *testing.T, cfgs ...reloadConfig) []*reloadInstance {
	t.Helper()
	bin := builtCaddy(t)
	dir := t.TempDir()
	out := make([]*reloadInstance, len(cfgs))
	errs := make([]error, len(cfgs))
	var wg sync.WaitGroup
	for i, c := range cfgs {
		file := filepath.Join(dir, fmt.Sprintf("caddy%d.Caddyfile", i))
		if err := os.WriteFile(file, []byte(c.caddyfile()), 0o600); err != nil {
			t.Fatal(err)
		}
		env := caddyEnv(t, "LP_PASSWORD="+ccemu.DefaultPassword)
		wg.Go(func() {
			p, err := launchCaddy(t, bin, env, fmt.Sprintf("127.0.0.1:%d", c.port), "run", "--config", file, "--adapter", "caddyfile")
			out[i], errs[i] = &reloadInstance{proc: p, cfg: c, url: fmt.Sprintf("http://127.0.0.1:%d", c.port)}, err
		})
	}
	wg.Wait()
	for _, err := range errs {
		if err != nil {
			t.Fatal(err)
		}
	}
	return out
}

// load posts a Caddyfile to the instance's admin API (forced, so that even
// an unchanged config is loaded) and returns the answer.
func (in *reloadInstance) load(t *testing.T, c reloadConfig) (int, string) {
	t.Helper()
	req, _ := http.NewRequest(http.MethodPost, fmt.Sprintf("http://127.0.0.1:%d/load", in.cfg.admin), strings.NewReader(c.caddyfile()))
	req.Header.Set("Content-Type", "text/caddyfile")
	req.Header.Set("Cache-Control", "must-revalidate")
	resp, err := httpClient.Do(req)
	if err != nil {
		t.Fatalf("POST /load: %v", err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(body)
}

// reloadFails loads c, which must be refused for its missing CA file: not
// for anything that would stop it before lpauth is provisioned.
func (in *reloadInstance) reloadFails(t *testing.T, c reloadConfig) {
	t.Helper()
	st, body := in.load(t, c)
	if st/100 == 2 || !strings.Contains(body, c.missingCA) {
		t.Fatalf("the failing reload answered %d, want an error about %s: %s", st, c.missingCA, body)
	}
}

func (in *reloadInstance) reloadOK(t *testing.T, c reloadConfig) {
	t.Helper()
	if st, body := in.load(t, c); st != 200 {
		t.Fatalf("the good reload answered %d: %s", st, body)
	}
	in.cfg = c
}

// get sends a GET to the instance's data path; 0 means no answer.
func (in *reloadInstance) get(rest string) int {
	resp, err := httpClient.Get(in.url + dataPath(rest))
	if err != nil {
		return 0
	}
	_, _ = io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	return resp.StatusCode
}

func (in *reloadInstance) mustGet(t *testing.T, rest string) {
	t.Helper()
	if st := in.get(rest); st != 200 {
		t.Fatalf("%s%s: status %d", in.url, dataPath(rest), st)
	}
}

// A failed reload leaves the running config's refresh cadence and login
// timeout in force.
func TestE2EFailedReloadKeepsSettings(t *testing.T) {
	e2eTier(t)
	emu, srv := emulator(t, ccemu.Config{})
	a := newReloadConfig(t, srv, "refresh_interval 10m", "login_timeout 10s")
	in := startReloadInstances(t, a)[0]
	in.mustGet(t, "first")
	if n := emu.Counters().LoginAttempts; n != 1 {
		t.Fatalf("%d logins for the first request, want 1", n)
	}

	in.reloadFails(t, a.with("refresh_interval 1s", "login_timeout 1s").failing(t))
	in.mustGet(t, "after-failed-reload")
	base := emu.Counters().Refreshes
	// What must not happen is refreshes at the rejected config's 1s: real
	// time must pass (the process's refresher runs on the real clock), as
	// long as three of those intervals.
	time.Sleep(3500 * time.Millisecond)
	if n := emu.Counters().Refreshes - base; n != 0 {
		t.Errorf("%d refreshes in 3.5s after a failed reload; the running config says every 10m", n)
	}

	// A re-login of 2s: within the running config's 10s login timeout, not
	// within the rejected config's 1s.
	emu.DelayNextLogins(1, 2*time.Second)
	emu.ExpireSessions()
	start := time.Now()
	if st := in.get("after-expiry"); st != 200 {
		t.Errorf("after an expiry with a 2s re-login: status %d after %s; the running config waits 10s for a login", st, time.Since(start).Round(10*time.Millisecond))
	}
	if c := emu.Counters(); c.LoginAttempts != 2 || c.Logins != 2 {
		t.Errorf("counters %+v; want exactly 2 logins, both done (the first and one after the expiry)", c)
	}
}

// A good reload after a failed one applies its settings from its start and
// keeps the session.
func TestE2EGoodReloadAppliesSettings(t *testing.T) {
	e2eTier(t)
	emu, srv := emulator(t, ccemu.Config{})
	a := newReloadConfig(t, srv, "refresh_interval 10m", "login_timeout 10s")
	in := startReloadInstances(t, a)[0]
	in.mustGet(t, "first")
	in.reloadFails(t, a.with("refresh_interval 1h", "login_timeout 30s").failing(t))

	base := emu.Counters().Refreshes
	in.reloadOK(t, a.with("refresh_interval 1s", "login_timeout 1s"))
	reloaded := time.Now()
	in.mustGet(t, "after-good-reload")
	if n := emu.Counters().LoginAttempts; n != 1 {
		t.Fatalf("%d logins after a good reload of the same identity, want 1 (the session is kept)", n)
	}
	eventually(t, 3500*time.Millisecond, "2 refreshes at the new config's 1s", func() bool { return emu.Counters().Refreshes-base >= 2 })
	t.Logf("2 refreshes %s after the good reload", time.Since(reloaded).Round(10*time.Millisecond))

	// The new config's 1s login timeout: a 2s re-login is not waited for.
	emu.DelayNextLogins(1, 2*time.Second)
	emu.ExpireSessions()
	start := time.Now()
	if st := in.get("after-expiry"); st != 503 {
		t.Errorf("after an expiry with a 2s re-login: status %d after %s; the new config waits 1s for a login, so 503", st, time.Since(start).Round(10*time.Millisecond))
	}
	if n := emu.Counters().LoginAttempts; n != 2 {
		t.Errorf("%d login attempts, want 2 (the first and one after the expiry)", n)
	}
}

// startRedisPair starts two instances of one cluster whose Redis storage is
// given inside the lpauth block, and logs the cluster in once.
func startRedisPair(t *testing.T, emu *ccemu.Emulator, srv *httptest.Server) []*reloadInstance {
	t.Helper()
	storage := redisStorage(t)
	cfgs := make([]reloadConfig, 2)
	for i := range cfgs {
		cfgs[i] = newReloadConfig(t, srv, "refresh_interval 10m", "login_timeout 5s")
		cfgs[i].storage = storage
	}
	insts := startReloadInstances(t, cfgs...)
	insts[0].mustGet(t, "warm")
	insts[1].mustGet(t, "warm")
	if n := emu.Counters().LoginAttempts; n != 1 {
		t.Fatalf("%d logins for two instances of one cluster, want 1", n)
	}
	return insts
}

func outputsContain(insts []*reloadInstance, s string) []int {
	var which []int
	for i, in := range insts {
		if strings.Contains(in.proc.out.String(), s) {
			which = append(which, i+1)
		}
	}
	return which
}

// After a failed reload the instance still uses its running config's Redis
// storage: the cluster still shares one session.
func TestE2EFailedReloadKeepsRedisStorage(t *testing.T) {
	e2eTier(t)
	emu, srv := emulator(t, ccemu.Config{})
	insts := startRedisPair(t, emu, srv)
	insts[0].reloadFails(t, insts[0].cfg.failing(t))

	emu.ExpireSessions()
	var wg sync.WaitGroup
	for _, in := range insts {
		for i := range 4 {
			wg.Go(func() {
				if st := in.get(fmt.Sprintf("after-expiry/%d", i)); st != 200 {
					t.Errorf("%s after an expiry: status %d", in.url, st)
				}
			})
		}
	}
	wg.Wait()
	if n := emu.Counters().LoginAttempts - 1; n != 1 {
		t.Errorf("%d new logins for the two instances after an expiry, want 1: the instance reloaded in vain left the cluster", n)
	}
	if which := outputsContain(insts, "client is closed"); len(which) > 0 {
		t.Errorf("instance(s) %v used a closed Redis client", which)
	}
}

// The login delay in the lock tests: shorter than caddy-storage-redis's
// first lock refresh (3s after the lock is taken), so a keeper that unlocks
// when its login ends leaves no refresh to run on a closed client.
const lockedLoginDelay = 2500 * time.Millisecond

// A reload while instance 1 holds the Redis lock mid-login: after a failed
// one the lock is released when the login ends; after a good one it is
// released or expires (5s for caddy-storage-redis). Either way instance 2
// is served again within that time and no goroutine keeps working on a
// closed Redis client.
func TestE2EReloadDuringLockedLogin(t *testing.T) {
	e2eTier(t)
	for _, tc := range []struct {
		name  string
		good  bool
		bound time.Duration // from the end of the login to instance 2 served
	}{
		{"failed", false, 1500 * time.Millisecond}, // released: one lock poll (1s) and a margin
		{"good", true, 6500 * time.Millisecond},    // the lock's 5s expiry, one poll and a margin
	} {
		t.Run(tc.name, func(t *testing.T) {
			emu, srv := emulator(t, ccemu.Config{})
			insts := startRedisPair(t, emu, srv)

			emu.DelayNextLogins(1, lockedLoginDelay)
			emu.ExpireSessions()
			type answer struct {
				status int
				at     time.Time
			}
			held := make(chan answer, 1)
			go func() { st := insts[0].get("held"); held <- answer{st, time.Now()} }()
			eventually(t, 5*time.Second, "instance 1's login (under the lock) to start", func() bool { return emu.Counters().LoginAttempts == 2 })
			loginStarted := time.Now()

			if tc.good {
				insts[0].reloadOK(t, insts[0].cfg.with("refresh_interval 11m", "login_timeout 5s"))
			} else {
				insts[0].reloadFails(t, insts[0].cfg.failing(t))
			}
			t.Logf("reloaded %s after the login started", time.Since(loginStarted).Round(10*time.Millisecond))
			select {
			case a := <-held:
				t.Fatalf("the login ended (status %d) before the reload was done: the test proves nothing", a.status)
			default:
			}

			served := make(chan time.Time, 1)
			stop := make(chan struct{})
			defer close(stop)
			go func() {
				for {
					select {
					case <-stop:
						return
					default:
					}
					if insts[1].get("waiting") == 200 {
						served <- time.Now()
						return
					}
					time.Sleep(20 * time.Millisecond) // the poll interval
				}
			}()

			var a answer
			select {
			case a = <-held:
			case <-time.After(15 * time.Second):
				t.Fatal("instance 1's request did not end within 15s")
			}
			if a.status != 200 {
				t.Errorf("instance 1's request during the reload: status %d", a.status)
			}
			t.Logf("instance 1 answered %s after its login started", a.at.Sub(loginStarted).Round(10*time.Millisecond))
			select {
			case at := <-served:
				t.Logf("instance 2 served %s after the login ended (bound %s)", at.Sub(a.at).Round(10*time.Millisecond), tc.bound)
				if at.Sub(a.at) > tc.bound {
					t.Errorf("instance 2 served %s after the login ended, want within %s", at.Sub(a.at).Round(10*time.Millisecond), tc.bound)
				}
			case <-time.After(time.Until(a.at.Add(tc.bound))):
				t.Errorf("instance 2 not served within %s of the login's end", tc.bound)
				select { // how long it does take, for the record
				case at := <-served:
					t.Logf("instance 2 served %s after the login ended", at.Sub(a.at).Round(10*time.Millisecond))
				case <-time.After(12 * time.Second):
					t.Logf("instance 2 still not served %s after the login ended", time.Since(a.at).Round(100*time.Millisecond))
				}
			}

			logins := emu.Counters().LoginAttempts
			switch {
			case !tc.good && logins != 2:
				t.Errorf("%d logins in all, want 2: instance 2 should adopt the session instance 1 stored", logins)
			case tc.good && logins > 3:
				// The login's own storage instance may be closed before it
				// can store the session; then instance 2 logs in once.
				t.Errorf("%d logins in all, want 2 or 3", logins)
			}

			// The lock refresher of caddy-storage-redis runs every 3s: real
			// time must pass, two of its rounds and a margin, for a refresher
			// left running on a closed client to show in the log.
			closedBefore := make([]int, len(insts))
			for i, in := range insts {
				closedBefore[i] = strings.Count(in.proc.out.String(), "client is closed")
			}
			time.Sleep(8 * time.Second)
			if which := outputsContain(insts, "Failed to refresh lock"); len(which) > 0 {
				t.Errorf("instance(s) %v: a lock refresher kept running on a closed Redis client", which)
			}
			for i, in := range insts {
				n := strings.Count(in.proc.out.String(), "client is closed")
				switch {
				case !tc.good && n > 0:
					t.Errorf("instance %d used a closed Redis client %d times after a failed reload", i+1, n)
				case tc.good && n > closedBefore[i]:
					// The unlock (and store) of the login that outlived its
					// config may meet the closed client once; nothing may
					// keep trying.
					t.Errorf("instance %d: %d more mentions of a closed Redis client in the 8s after the good reload settled (%d before)", i+1, n-closedBefore[i], closedBefore[i])
				}
			}
		})
	}
}

// Two lpauth blocks of one identity in one config that disagree on a
// session-wide setting are refused, naming the setting and both values.
// Blocks that agree, per-handler settings that differ and other identities
// with other settings load.
func TestE2EConflictingSettingsInOneConfig(t *testing.T) {
	e2eTier(t)
	emu, srv := emulator(t, ccemu.Config{})
	block := func(account string, settings ...string) string {
		var b strings.Builder
		fmt.Fprintf(&b, "\t\tlpauth {\n\t\t\taccount_id %s\n\t\t\tusername %s\n\t\t\tpassword {env.LP_PASSWORD}\n\t\t\tcsds %s\n", account, ccemu.DefaultUsername, srv.URL)
		for _, s := range settings {
			b.WriteString("\t\t\t" + s + "\n")
		}
		b.WriteString("\t\t}\n\t\treverse_proxy " + srv.Listener.Addr().String() + "\n")
		return b.String()
	}
	global := func(admin int) string {
		return fmt.Sprintf("{\n\tadmin 127.0.0.1:%d\n\tpersist_config off\n\tauto_https off\n\tdefault_bind 127.0.0.1\n}\n", admin)
	}
	// twoSites puts the blocks in two sites (two servers); oneSite in two
	// handle blocks of one site.
	twoSites := func(a, b string) string {
		return global(freePort(t)) +
			fmt.Sprintf("http://127.0.0.1:%d {\n\troute {\n%s\t}\n}\n", freePort(t), a) +
			fmt.Sprintf("http://127.0.0.1:%d {\n\troute {\n%s\t}\n}\n", freePort(t), b)
	}
	oneSite := func(blocks ...string) string {
		s := global(freePort(t)) + fmt.Sprintf("http://127.0.0.1:%d {\n", freePort(t))
		for i, b := range blocks {
			if i < len(blocks)-1 {
				s += fmt.Sprintf("\thandle /block%d/* {\n%s\t}\n", i, b)
			} else {
				s += "\thandle {\n" + b + "\t}\n"
			}
		}
		return s + "}\n"
	}
	validate := func(t *testing.T, config string) (string, error) {
		t.Helper()
		file := filepath.Join(t.TempDir(), "Caddyfile")
		if err := os.WriteFile(file, []byte(config), 0o600); err != nil {
			t.Fatal(err)
		}
		cmd := exec.Command(builtCaddy(t), "validate", "--config", file, "--adapter", "caddyfile")
		cmd.Env = caddyEnv(t, "LP_PASSWORD="+ccemu.DefaultPassword)
		out, err := cmd.CombinedOutput()
		return string(out), err
	}
	// refused finds the line of out that names setting, and checks that it
	// names both values too.
	refused := func(t *testing.T, out, setting string, values ...string) {
		t.Helper()
		for line := range strings.SplitSeq(out, "\n") {
			// caddy validate reports the error as its last log line.
			if !strings.Contains(line, setting) || (strings.Contains(line, `"level"`) && !strings.Contains(line, `"level":"error"`)) {
				continue
			}
			for _, v := range values {
				if !strings.Contains(line, v) {
					t.Errorf("the error names %s but not the value %s: %s", setting, v, line)
				}
			}
			return
		}
		t.Errorf("no error line names %s:\n%s", setting, out)
	}
	const acct = ccemu.DefaultAccountID
	caA, caB := writeCAFile(t), writeCAFile(t)

	for _, tc := range []struct {
		name, config, setting string
		values                []string
	}{
		{"refresh_interval", twoSites(block(acct, "refresh_interval 5m"), block(acct, "refresh_interval 1m")), "refresh_interval", []string{"5m0s", "1m0s"}},
		{"login_timeout", oneSite(block(acct, "login_timeout 7s"), block(acct, "login_timeout 13s")), "login_timeout", []string{"7s", "13s"}},
		{"logout_on_stop", oneSite(block(acct, "logout_on_stop true"), block(acct, "logout_on_stop false")), "logout_on_stop", []string{"true", "false"}},
		// One client serves the session: a second CA bundle would be ignored.
		{"ca_file", oneSite(block(acct, "ca_file "+caA), block(acct, "ca_file "+caB)), "ca_file", []string{caA, caB}},
		// Two identities of one CC user would end each other's sessions.
		{"one user, two identities", twoSites(block(acct), block(acct, "domain http://"+srv.Listener.Addr().String())), "differ in domain",
			[]string{acct, ccemu.DefaultUsername, "one session per user"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			out, err := validate(t, tc.config)
			if err == nil {
				t.Fatalf("caddy validate accepted two blocks of one identity with different %s:\n%s", tc.setting, out)
			}
			refused(t, out, tc.setting, tc.values...)
		})
	}

	t.Run("agreeing", func(t *testing.T) {
		config := oneSite(
			block(acct, "refresh_interval 5m", "login_timeout 7s", "retry_body_limit 1MB"),
			block(acct, "refresh_interval 5m", "login_timeout 7s", "retry_body_limit 2MB"),
			block("87654321", "refresh_interval 1m", "login_timeout 13s"),
		)
		if out, err := validate(t, config); err != nil {
			t.Fatalf("caddy validate refused blocks that agree (per-handler settings and other identities may differ): %v\n%s", err, out)
		}
	})

	// A reload with such a config is refused too, and the running config
	// keeps serving with its session.
	t.Run("load", func(t *testing.T) {
		c := newReloadConfig(t, srv, "refresh_interval 5m")
		in := startReloadInstances(t, c)[0]
		in.mustGet(t, "first")
		conflicting := global(c.admin) + fmt.Sprintf("http://127.0.0.1:%d {\n\thandle /a/* {\n%s\t}\n\thandle {\n%s\t}\n}\n", c.port,
			block(acct, "refresh_interval 5m"),
			block(acct, "refresh_interval 1m"))
		req, _ := http.NewRequest(http.MethodPost, fmt.Sprintf("http://127.0.0.1:%d/load", c.admin), strings.NewReader(conflicting))
		req.Header.Set("Content-Type", "text/caddyfile")
		resp, err := httpClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode/100 == 2 {
			t.Fatalf("/load accepted two blocks of one identity with different refresh_interval: %d %s", resp.StatusCode, body)
		}
		refused(t, string(body), "refresh_interval", "5m0s", "1m0s")
		in.mustGet(t, "after-refused-load")
		if n := emu.Counters().LoginAttempts; n != 1 {
			t.Errorf("%d logins, want 1: the running config keeps its session", n)
		}
	})
}

// writeCAFile writes a self-signed CA certificate in PEM and returns its path.
func writeCAFile(t *testing.T) string {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "lpauth test CA"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour), IsCA: true,
		BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(t.TempDir(), "ca.pem")
	if err := os.WriteFile(path, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}

// A reload with a new password that fails to load replaces nothing: the
// running identity is still the one that logs in when its session ends
// (with the password CC still has), and the new one never logged in.
func TestE2EFailedReloadWithNewPasswordReplacesNothing(t *testing.T) {
	e2eTier(t)
	emu, srv := emulator(t, ccemu.Config{})
	pw := filepath.Join(t.TempDir(), "lp_password")
	if err := os.WriteFile(pw, []byte(ccemu.DefaultPassword+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	c := newReloadConfig(t, srv)
	c.password = "{file." + pw + "}"
	in := startReloadInstances(t, c)[0]
	eventually(t, 5*time.Second, "the login at start", func() bool { return emu.Counters().Logins == 1 })
	in.mustGet(t, "before")

	if err := os.WriteFile(pw, []byte("not-at-cc-yet\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	in.reloadFails(t, c.failing(t))
	emu.ExpireSessions()
	in.mustGet(t, "after-failed-reload")
	if n := emu.Counters(); n.LoginAttempts != 2 || n.LoginsRefused != 0 {
		t.Fatalf("%d login attempts, %d refused; want 2 and 0: the running identity logs in again, the failed config's never", n.LoginAttempts, n.LoginsRefused)
	}
}
