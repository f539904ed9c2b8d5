// Copyright 2026 The lpauth Authors
// SPDX-License-Identifier: Apache-2.0

package e2e

import (
	"crypto/rand"
	"encoding/base64"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"testing"
	"time"

	lpauth "github.com/lpauth/caddy-lpauth"
	"github.com/lpauth/caddy-lpauth/ccemu"
	"github.com/lpauth/caddy-lpauth/internal/caddyproc"
	"github.com/lpauth/caddy-lpauth/internal/rotation"
)

// rotatingInstance is one instance of a cluster whose password is read
// from a file of its own, reloaded through its admin API.
type rotatingInstance struct {
	clusterInstance
	admin, addr    string
	config, pwFile string
}

// The rolling rotation of a cluster's password, through the built binary:
// the password changed at CC (keeping live sessions), then on each
// instance in turn written to its file and `caddy reload --force`, under
// steady POSTs to both. With encryption_key set, a reloaded instance's new
// identity finds the stored session (its name comes from the public parts,
// its key from encryption_key, not from the password) and adopts it: no
// login, no logout, no refused login, no request failed. The next login,
// after CC ends the session, is the cluster's one, with the new password.
func TestE2EClusterPasswordRotation(t *testing.T) {
	e2eTier(t)
	emu, srv := emulator(t, ccemu.Config{})
	bin := builtCaddy(t)
	dir := t.TempDir()
	key := make([]byte, 32)
	_, _ = rand.Read(key)
	storage := fmt.Sprintf("storage file_system {\n\t\troot %s\n\t}", filepath.Join(dir, "storage"))

	insts := make([]*rotatingInstance, 2)
	for i := range insts {
		in := &rotatingInstance{
			admin:  caddyproc.Addr(freePort(t)),
			addr:   caddyproc.Addr(freePort(t)),
			config: filepath.Join(dir, fmt.Sprintf("caddy%d.Caddyfile", i+1)),
			pwFile: filepath.Join(dir, fmt.Sprintf("lp_password%d", i+1)),
		}
		in.url = "http://" + in.addr
		writeFile(t, in.pwFile, ccemu.DefaultPassword+"\n")
		writeFile(t, in.config, caddyproc.Proxy{
			Admin:    in.admin,
			Global:   storage,
			Addr:     in.addr,
			CSDS:     srv.URL,
			Password: "{file." + in.pwFile + "}",
			Lpauth:   "login_timeout 5s\n\t\tstorage\n\t\tencryption_key {env.LP_ENCRYPTION_KEY}",
			Upstream: srv.Listener.Addr().String(),
		}.Caddyfile())
		env := caddyEnv(t, "LP_ENCRYPTION_KEY="+base64.StdEncoding.EncodeToString(key))
		p, err := launchCaddy(t, bin, env, in.addr, "run", "--config", in.config, "--adapter", "caddyfile")
		if err != nil {
			t.Fatal(err)
		}
		in.proc = p
		insts[i] = in
	}
	// The first logs in as its config starts; the second adopts that session.
	eventually(t, 5*time.Second, "the login at start", func() bool { return emu.Counters().Logins == 1 })

	client := &http.Client{Timeout: 30 * time.Second, Transport: &http.Transport{MaxIdleConnsPerHost: 4}}
	defer client.CloseIdleConnections()
	var targets []string
	for _, in := range insts {
		targets = append(targets, rotation.URL(in.addr, "cluster-rotation", 50*time.Millisecond))
	}
	traffic := rotation.StartTraffic(client, targets, 4, 2048)
	stopped := false
	defer func() {
		if !stopped {
			traffic.Stop()
		}
	}()
	// Traffic runs through both instances, and some has been answered
	// before the rotation (the steady latency).
	eventually(t, 10*time.Second, "traffic through both instances", func() bool {
		return emu.Counters().DataCalls >= 20 && insts[0].serving(t) && insts[1].serving(t)
	})
	if c := emu.Counters(); c.Logins != 1 || c.LoginAttempts != 1 {
		t.Fatalf("two instances under traffic: %d logins of %d attempts, want the cluster's one", c.Logins, c.LoginAttempts)
	}
	base := emu.Counters()

	password := rotation.NewPassword(1)
	from := time.Now()
	if err := emu.SetPassword(ccemu.DefaultUsername, password, false); err != nil {
		t.Fatal(err)
	}
	for i, in := range insts {
		writeFile(t, in.pwFile, password+"\n")
		took, err := rotation.Reload(bin, in.config, in.admin)
		if err != nil {
			t.Fatal(err)
		}
		t.Logf("instance %d: reload took %s", i+1, took.Round(time.Millisecond))
		// The next reload comes once this instance's new identity serves
		// the traffic and the cluster has answered more of it.
		calls := emu.Counters().DataCalls
		eventually(t, 10*time.Second, fmt.Sprintf("instance %d's new identity to serve traffic", i+1), func() bool {
			return emu.Counters().DataCalls >= calls+20 && in.serving(t)
		})
	}
	windows := []rotation.Window{{From: from, To: time.Now()}}
	traffic.Stop()
	stopped = true

	var res rotation.Result
	traffic.Report(&res, windows)
	t.Logf("%d requests, %d failed, %d replayed; steady p99 %s, worst during the rotation %s",
		res.Requests, res.Failed, res.Replayed, res.SteadyP99.Round(time.Millisecond), res.Worst[0].Round(time.Millisecond))
	if res.Failed != 0 {
		t.Errorf("%d of %d requests failed during the rolling rotation: %v", res.Failed, res.Requests, res.Failures)
	}
	if res.Requests < 40 {
		t.Errorf("only %d requests: the traffic was not steady", res.Requests)
	}
	// The replaced keepers close once their requests have finished, and
	// the admin API lists them until then: once each instance lists its one
	// identity, a logout they made would show.
	for i, in := range insts {
		eventually(t, 10*time.Second, fmt.Sprintf("instance %d to release its replaced identity", i+1), func() bool {
			st := in.sessions(t)
			return len(st) == 1 && !st[0].Replaced
		})
	}
	c := emu.Counters()
	if n := c.LoginAttempts - base.LoginAttempts; n != 0 {
		t.Errorf("%d login attempts during the rolling rotation, want 0: each reloaded instance adopts the stored session", n)
	}
	if n := c.Logouts - base.Logouts; n != 0 {
		t.Errorf("%d logouts, want 0: in cluster mode a replaced identity leaves the session to the cluster", n)
	}
	if n := c.LoginsRefused - base.LoginsRefused; n != 0 {
		t.Errorf("CC refused %d logins during the rotation: an instance tried the old password", n)
	}
	if n := c.UnauthorizedDataCalls - base.UnauthorizedDataCalls; n != 0 {
		t.Errorf("CC answered %d data calls 401 during the rotation", n)
	}

	// The session ends at CC: the cluster logs in once, with the new
	// password, which CC accepts.
	emu.ExpireSessions()
	base = emu.Counters()
	burst(t, []*clusterInstance{&insts[0].clusterInstance, &insts[1].clusterInstance}, 3)
	c = emu.Counters()
	if c.Logins-base.Logins != 1 || c.LoginAttempts-base.LoginAttempts != 1 {
		t.Errorf("after an expiry the cluster made %d logins of %d attempts, want 1 of 1",
			c.Logins-base.Logins, c.LoginAttempts-base.LoginAttempts)
	}
	if c.LoginsRefused != 0 {
		t.Errorf("CC refused %d logins: the old password was used", c.LoginsRefused)
	}
	if c.SessionsEndedByLogin != 0 {
		t.Errorf("%d sessions ended by another member's login, want 0 (one session per user)", c.SessionsEndedByLogin)
	}
}

// sessions is the instance's identities as its admin API lists them: those
// of the running config, then replaced ones still finishing requests.
func (in *rotatingInstance) sessions(t *testing.T) []lpauth.Status {
	t.Helper()
	var st []lpauth.Status
	if code := getJSON(t, "GET", "http://"+in.admin+"/lpauth/sessions", &st); code != 200 {
		t.Fatalf("%s/lpauth/sessions: status %d", in.admin, code)
	}
	return st
}

// serving says whether the instance's running identity holds a session and
// has requests in flight with it.
func (in *rotatingInstance) serving(t *testing.T) bool {
	for _, st := range in.sessions(t) {
		if !st.Replaced && st.LoggedIn && st.InFlight > 0 {
			return true
		}
	}
	return false
}

func writeFile(t *testing.T, path, content string) {
	t.Helper()
	if err := os.WriteFile(path, []byte(content), 0o600); err != nil {
		t.Fatal(err)
	}
}
