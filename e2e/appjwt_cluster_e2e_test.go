// Copyright 2026 The lpauth Authors
// SPDX-License-Identifier: Apache-2.0

package e2e

// Three Caddy processes (the ./xcaddy.sh binary) share one AppJWT through
// file_system storage, and through Redis storage: under steady traffic to
// all three, Sentinel sees one fetch at start and one per renewal, and the
// three send the same token except around a renewal.

import (
	"encoding/json"
	"fmt"
	"io"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/lpauth/caddy-lpauth/ccemu"
)

const (
	// clusterTokenLifetime is short, so that the run sees several renewals
	// (each at 80 %, 3.2 s).
	clusterTokenLifetime = 4 * time.Second
	// clusterTokenSwitch bounds how long after a renewal the instances may
	// still send the old token: the ones that did not renew wait for the
	// storage lock and adopt the stored token as soon as it is there (they
	// read the storage every 5-20 ms meanwhile); the bound leaves room for a
	// loaded machine.
	clusterTokenSwitch = 2 * time.Second
)

// tokenSeen is one answer of the steady traffic: the instance asked, when,
// and the fingerprint of the token the upstream got.
type tokenSeen struct {
	inst int
	sent time.Time
	fp   string
}

// echoVia GETs url and returns the emulator's echo; it does not end the
// test, so it may run on goroutines.
func echoVia(url string) (echoReply, error) {
	var e echoReply
	resp, err := httpClient.Get(url)
	if err != nil {
		return e, err
	}
	data, err := io.ReadAll(resp.Body)
	resp.Body.Close()
	if err != nil {
		return e, fmt.Errorf("%s: reading the answer: %w", url, err)
	}
	if resp.StatusCode != 200 {
		return e, fmt.Errorf("%s: status %d: %s", url, resp.StatusCode, data)
	}
	if err := json.Unmarshal(data, &e); err != nil {
		return e, fmt.Errorf("%s: not the emulator's echo: %q", url, data)
	}
	return e, nil
}

func testAppJWTCluster(t *testing.T, storage string) {
	emu, srv := emulator(t, ccemu.Config{TokenLifetime: clusterTokenLifetime})
	builtCaddy(t) // the first call builds it: not part of the launch
	launched := time.Now()
	insts := launchCluster(t, 3, func(port int) string { return appJWTClusterCaddyfile(port, storage, srv) },
		"LP_CLIENT_SECRET="+ccemu.DefaultClientSecret)

	// 20 requests a second, round robin, for about three lifetimes; each
	// on its own goroutine so that a slow answer does not slow the rate.
	const rate, run = 20, 3*clusterTokenLifetime + time.Second
	var (
		mu   sync.Mutex
		seen []tokenSeen
		wg   sync.WaitGroup
	)
	tick := time.NewTicker(time.Second / rate)
	start := time.Now()
	for i := 0; time.Since(start) < run; i++ {
		<-tick.C
		in := i % len(insts)
		wg.Go(func() {
			sent := time.Now()
			e, err := echoVia(insts[in].url + dataPath(fmt.Sprintf("jwt/%d", i)))
			if err != nil {
				t.Errorf("instance %d: %v", in, err)
				return
			}
			if e.CredentialKind != "app_jwt" {
				t.Errorf("instance %d: upstream got credential_kind %q, want app_jwt", in, e.CredentialKind)
				return
			}
			mu.Lock()
			seen = append(seen, tokenSeen{in, sent, e.BearerFingerprint})
			mu.Unlock()
		})
	}
	tick.Stop()
	wg.Wait()
	end := time.Now()
	if t.Failed() {
		return
	}

	// One fetch for the start (whether at config start or at the first
	// request, which may be up to the launch earlier than the first
	// request), then one per renewal for the whole cluster.
	period := clusterTokenLifetime / 5 * 4
	lo := 1 + int64(end.Sub(start)/period) - 1
	hi := 1 + int64(end.Sub(launched)/period) + 1
	c := emu.Counters()
	order := tokensInOrder(seen)
	t.Logf("%d requests in %s; Sentinel saw %d token requests (want %d-%d), %d tokens in use; %d upstream 401s (retried)",
		len(seen), end.Sub(start).Round(time.Millisecond), c.TokenRequests, lo, hi, len(order), c.UnauthorizedDataCalls)
	if c.TokenRequests < lo || c.TokenRequests > hi {
		t.Errorf("%d token requests from 3 instances in %s with a %s lifetime, want %d to %d: one per renewal for the cluster",
			c.TokenRequests, end.Sub(launched).Round(time.Millisecond), clusterTokenLifetime, lo, hi)
	}
	for _, tok := range order {
		t.Logf("token %s: sent from +%s to +%s by instances %v", tok.fp,
			tok.first.Sub(start).Round(time.Millisecond), tok.last.Sub(start).Round(time.Millisecond), tok.insts)
	}
	if c.TokenRequestsOK != c.TokenRequests {
		t.Errorf("%d of %d token requests succeeded", c.TokenRequestsOK, c.TokenRequests)
	}

	// The instances agree on the token except just after a renewal: each
	// token's last use comes soon after its successor's first.
	for i := 1; i < len(order); i++ {
		prev, next := order[i-1], order[i]
		if lag := prev.last.Sub(next.first); lag > clusterTokenSwitch {
			t.Errorf("token %s was still sent %s after token %s was first seen (by instances %v and %v); want at most %s",
				prev.fp, lag.Round(time.Millisecond), next.fp, prev.insts, next.insts, clusterTokenSwitch)
		}
	}
	for _, tok := range order {
		if len(tok.insts) != len(insts) && tok.last.Sub(tok.first) > clusterTokenSwitch {
			t.Errorf("token %s was sent for %s by instances %v only", tok.fp, tok.last.Sub(tok.first).Round(time.Millisecond), tok.insts)
		}
	}

	for i, in := range insts {
		out := in.proc.out.String()
		for _, secret := range emu.IssuedSecrets() {
			if strings.Contains(out, secret) {
				t.Errorf("instance %d logged a secret", i)
				break
			}
		}
	}
}

// tokenUse is how one token was used by the cluster.
type tokenUse struct {
	fp          string
	first, last time.Time
	insts       []int // the instances that sent it, in order
}

// tokensInOrder groups the answers by token, ordered by first use.
func tokensInOrder(seen []tokenSeen) []*tokenUse {
	by := map[string]*tokenUse{}
	var out []*tokenUse
	for _, s := range seen {
		u := by[s.fp]
		if u == nil {
			u = &tokenUse{fp: s.fp, first: s.sent, last: s.sent}
			by[s.fp] = u
			out = append(out, u)
		}
		if s.sent.Before(u.first) {
			u.first = s.sent
		}
		if s.sent.After(u.last) {
			u.last = s.sent
		}
		if !slices.Contains(u.insts, s.inst) {
			u.insts = append(u.insts, s.inst)
			slices.Sort(u.insts)
		}
	}
	slices.SortFunc(out, func(a, b *tokenUse) int { return a.first.Compare(b.first) })
	return out
}

func TestE2EAppJWTClusterFileSystem(t *testing.T) {
	e2eTier(t)
	testAppJWTCluster(t, fmt.Sprintf("storage file_system {\n\t\troot %s\n\t}", t.TempDir()))
}

func TestE2EAppJWTClusterRedis(t *testing.T) {
	e2eTier(t)
	addr := redisAddr(t)
	// A key prefix per run, so reruns against one server start clean.
	prefix := fmt.Sprintf("lpauth-appjwt-test-%d", time.Now().UnixNano())
	testAppJWTCluster(t, fmt.Sprintf("storage redis {\n\t\taddress %s\n\t\tkey_prefix %s\n\t}", addr, prefix))
}
