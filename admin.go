// Copyright 2026 The lpauth Authors
// SPDX-License-Identifier: Apache-2.0

package lpauth

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"sort"
	"sync"

	"github.com/caddyserver/caddy/v2"
)

func init() {
	caddy.RegisterModule(AdminAPI{})
}

// AdminAPI adds lpauth's routes to Caddy's admin endpoint:
//
//	GET  /lpauth/sessions                    one entry per identity, including
//	                                         replaced ones still finishing
//	                                         requests; no secret
//	POST /lpauth/sessions/relogin[?account_id=<id>]
//	                                         log in again now, through the same
//	                                         single login path as requests; only
//	                                         identities not replaced by a reload
type AdminAPI struct{}

// CaddyModule returns the Caddy module information.
func (AdminAPI) CaddyModule() caddy.ModuleInfo {
	return caddy.ModuleInfo{
		ID:  "admin.api.lpauth",
		New: func() caddy.Module { return new(AdminAPI) },
	}
}

// Routes returns the admin routes.
func (a *AdminAPI) Routes() []caddy.AdminRoute {
	return []caddy.AdminRoute{
		{Pattern: "/lpauth/sessions", Handler: caddy.AdminHandlerFunc(a.sessions)},
		{Pattern: "/lpauth/sessions/relogin", Handler: caddy.AdminHandlerFunc(a.relogin)},
	}
}

// listedKeepers returns the keepers, optionally of one account, in a
// stable order: those of the running configs, then those a reload let go
// that are still finishing requests.
func listedKeepers(account string) []*keeper {
	return append(sortedKeepers(account, forEachKeeper), sortedKeepers(account, forEachDraining)...)
}

// liveKeepers returns the keepers a relogin may act on: those of the
// running configs that no newer identity of their user has replaced.
func liveKeepers(account string) []*keeper {
	var live []*keeper
	for _, k := range sortedKeepers(account, forEachKeeper) {
		if k.successor() == nil {
			live = append(live, k)
		}
	}
	return live
}

func sortedKeepers(account string, each func(func(*keeper))) []*keeper {
	var ks []*keeper
	each(func(k *keeper) {
		if account == "" || k.Identity().Account == account {
			ks = append(ks, k)
		}
	})
	sort.Slice(ks, func(i, j int) bool {
		a, b := ks[i].Identity(), ks[j].Identity()
		if a.Account != b.Account {
			return a.Account < b.Account
		}
		return a.Name < b.Name
	})
	return ks
}

func (a *AdminAPI) sessions(w http.ResponseWriter, r *http.Request) error {
	if r.Method != http.MethodGet {
		return caddy.APIError{HTTPStatus: http.StatusMethodNotAllowed, Err: fmt.Errorf("method %s not allowed; use GET", r.Method)}
	}
	out := []Status{}
	for _, k := range listedKeepers(r.URL.Query().Get("account_id")) {
		out = append(out, k.Status())
	}
	return writeAdminJSON(w, out)
}

// reloginResult is one keeper's answer to a forced re-login.
type reloginResult struct {
	Status
	OK    bool   `json:"ok"`
	Error string `json:"error,omitempty"`
}

func (a *AdminAPI) relogin(w http.ResponseWriter, r *http.Request) error {
	if r.Method != http.MethodPost {
		return caddy.APIError{HTTPStatus: http.StatusMethodNotAllowed, Err: fmt.Errorf("method %s not allowed; use POST", r.Method)}
	}
	account := r.URL.Query().Get("account_id")
	ks := liveKeepers(account)
	if len(ks) == 0 {
		return caddy.APIError{HTTPStatus: http.StatusNotFound, Err: fmt.Errorf("no live lpauth identity for account %q (replaced ones finishing their requests are not logged in again)", account)}
	}
	results := make([]reloginResult, len(ks))
	var wg sync.WaitGroup
	for i, k := range ks {
		wg.Go(func() {
			// Not the admin request's context: a client that hangs up
			// must not leave the keeper half way.
			_, err := k.Relogin(context.Background())
			results[i] = reloginResult{Status: k.Status(), OK: err == nil}
			if err != nil {
				results[i].Error = err.Error()
			}
		})
	}
	wg.Wait()
	return writeAdminJSON(w, results)
}

func writeAdminJSON(w http.ResponseWriter, v any) error {
	w.Header().Set("Content-Type", "application/json")
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	return enc.Encode(v)
}

// Interface guards
var _ caddy.AdminRouter = (*AdminAPI)(nil)
