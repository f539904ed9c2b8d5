// Copyright 2026 The lpauth Authors
// SPDX-License-Identifier: Apache-2.0

package ccemu

import (
	"encoding/json"
	"slices"
	"strings"
	"testing"
)

func lookupOne(t *testing.T, url, svc string) reply {
	t.Helper()
	return do(t, "GET", url+"/api/account/"+DefaultAccountID+"/service/"+svc+"/baseURI.json?version=1.0", nil, nil)
}

// lookupAll returns the all-services answer as service -> host.
func lookupAll(t *testing.T, url string) map[string]string {
	t.Helper()
	r := do(t, "GET", url+"/api/account/"+DefaultAccountID+"/service/baseURI.json?version=1.0", nil, nil)
	var all baseURIs
	if err := json.Unmarshal(r.body, &all); err != nil || r.status != 200 {
		t.Fatalf("all services: %d %s", r.status, r.body)
	}
	out := map[string]string{}
	for _, s := range all.BaseURIs {
		out[s.Service] = s.BaseURI
	}
	return out
}

func TestSetServiceHost(t *testing.T) {
	t.Parallel()
	e, srv := newServer(t, Config{})
	own := srv.Listener.Addr().String()

	e.SetServiceHost("msgHist", "127.0.0.1:1234")
	want := `{"service":"msgHist","account":"12345678","baseURI":"127.0.0.1:1234"}`
	if r := lookupOne(t, srv.URL, "msgHist"); r.status != 200 || string(r.body) != want {
		t.Errorf("single: %d %s, want %s", r.status, r.body, want)
	}
	// Other services keep the default.
	if r := lookupOne(t, srv.URL, "agentVep"); !strings.Contains(string(r.body), `"baseURI":"`+own+`"`) {
		t.Errorf("agentVep moved too: %s", r.body)
	}
	all := lookupAll(t, srv.URL)
	if all["msgHist"] != "127.0.0.1:1234" || all["agentVep"] != own || all["leDataReporting"] != own {
		t.Errorf("all services: %v", all)
	}

	// A service the emulator does not list becomes known, in both forms.
	if r := lookupOne(t, srv.URL, "customSvc"); r.status != 404 {
		t.Fatalf("unknown service before SetServiceHost: %d", r.status)
	}
	e.SetServiceHost("customSvc", "custom.example:8443")
	if r := lookupOne(t, srv.URL, "customSvc"); r.status != 200 || !strings.Contains(string(r.body), "custom.example:8443") {
		t.Errorf("custom service: %d %s", r.status, r.body)
	}
	if got := lookupAll(t, srv.URL)["customSvc"]; got != "custom.example:8443" {
		t.Errorf("custom service missing from all services: %q", got)
	}
	// The login reply's csdsCollectionResponse agrees with the Domain API.
	b, _ := json.Marshal(mustLogin(t, srv, userBody()).raw["csdsCollectionResponse"])
	var coll baseURIs
	if err := json.Unmarshal(b, &coll); err != nil {
		t.Fatal(err)
	}
	if !slices.Contains(coll.BaseURIs, serviceURI{"msgHist", DefaultAccountID, "127.0.0.1:1234"}) {
		t.Errorf("login csdsCollectionResponse lacks the override: %s", b)
	}

	// Reset keeps the hosts (configuration, not a fault).
	e.Reset()
	if r := lookupOne(t, srv.URL, "msgHist"); !strings.Contains(string(r.body), "127.0.0.1:1234") {
		t.Errorf("Reset cleared the service host: %s", r.body)
	}

	// "" clears: back to the default, and the extra service is gone.
	e.SetServiceHost("msgHist", "")
	e.SetServiceHost("customSvc", "")
	if r := lookupOne(t, srv.URL, "msgHist"); !strings.Contains(string(r.body), `"baseURI":"`+own+`"`) {
		t.Errorf("after clearing: %s", r.body)
	}
	if r := lookupOne(t, srv.URL, "customSvc"); r.status != 404 {
		t.Errorf("cleared custom service: %d", r.status)
	}
	// Case-sensitive still.
	e.SetServiceHost("msgHist", "127.0.0.1:1234")
	if r := lookupOne(t, srv.URL, "msghist"); r.status != 404 {
		t.Errorf("msghist (wrong case): %d", r.status)
	}

	// The array form carries the override too.
	e2, srv2 := newServer(t, Config{DomainArrayForm: true, BaseURI: "va.example"})
	e2.SetServiceHost("msgHist", "lo.example")
	want = `{"baseURIs":[{"service":"msgHist","account":"12345678","baseURI":"lo.example"}]}`
	if r := lookupOne(t, srv2.URL, "msgHist"); string(r.body) != want {
		t.Errorf("array form: %s, want %s", r.body, want)
	}
	if r := lookupOne(t, srv2.URL, "agentVep"); !strings.Contains(string(r.body), "va.example") {
		t.Errorf("array form default: %s", r.body)
	}
}

func TestFailNextDomainLookups(t *testing.T) {
	t.Parallel()
	e, srv := newServer(t, Config{})
	e.FailNextDomainLookups(2, 503)
	envelope(t, lookupOne(t, srv.URL, "msgHist"), 503, codeInjected, "SERVICE_UNAVAILABLE")
	r := do(t, "GET", srv.URL+"/api/account/"+DefaultAccountID+"/service/baseURI.json?version=1.0", nil, nil)
	envelope(t, r, 503, codeInjected, "SERVICE_UNAVAILABLE") // the all-services form counts too
	if r := lookupOne(t, srv.URL, "msgHist"); r.status != 200 {
		t.Fatalf("third lookup: %d %s", r.status, r.body)
	}
	if n := e.Counters().DomainLookups; n != 3 {
		t.Errorf("DomainLookups %d, want 3 (failed ones count)", n)
	}
	// Logins are not affected.
	mustLogin(t, srv, userBody())

	e.FailNextDomainLookups(1, 200) // outside 400-599 means 500
	envelope(t, lookupOne(t, srv.URL, "msgHist"), 500, codeInjected, "INTERNAL_SERVER_ERROR")

	e.FailNextDomainLookups(5, 500)
	e.FailNextDomainLookups(0, 500) // cancels
	if r := lookupOne(t, srv.URL, "msgHist"); r.status != 200 {
		t.Errorf("after cancel: %d", r.status)
	}
	e.FailNextDomainLookups(5, 500)
	e.Reset() // a fault knob: Reset clears it
	if r := lookupOne(t, srv.URL, "msgHist"); r.status != 200 {
		t.Errorf("after Reset: %d", r.status)
	}
}

func TestControlDomainKnobs(t *testing.T) {
	t.Parallel()
	e, srv := newServer(t, Config{})
	ctl := srv.URL + "/_ccemu"

	r := post(t, ctl+"/service-host?service=msgHist&host=127.0.0.1:1234", "", nil)
	if r.status != 200 || string(r.body) != `{"host":"127.0.0.1:1234","service":"msgHist"}` {
		t.Fatalf("service-host: %d %s", r.status, r.body)
	}
	if r := lookupOne(t, srv.URL, "msgHist"); !strings.Contains(string(r.body), "127.0.0.1:1234") {
		t.Errorf("service-host had no effect: %s", r.body)
	}
	if r := post(t, ctl+"/service-host?service=msgHist", "", nil); r.status != 200 {
		t.Fatalf("service-host clear: %d %s", r.status, r.body)
	}
	if r := lookupOne(t, srv.URL, "msgHist"); !strings.Contains(string(r.body), srv.Listener.Addr().String()) {
		t.Errorf("service-host without host did not clear: %s", r.body)
	}

	r = post(t, ctl+"/fail-domain-lookups?count=2&status=502", "", nil)
	if r.status != 200 || string(r.body) != `{"count":2,"status":502}` {
		t.Fatalf("fail-domain-lookups: %d %s", r.status, r.body)
	}
	envelope(t, lookupOne(t, srv.URL, "msgHist"), 502, codeInjected, "BAD_GATEWAY")
	envelope(t, lookupOne(t, srv.URL, "agentVep"), 502, codeInjected, "BAD_GATEWAY")
	if r := lookupOne(t, srv.URL, "msgHist"); r.status != 200 {
		t.Errorf("third lookup: %d", r.status)
	}
	post(t, ctl+"/fail-domain-lookups", "", nil) // count 1, status 500 by default
	envelope(t, lookupOne(t, srv.URL, "msgHist"), 500, codeInjected, "INTERNAL_SERVER_ERROR")
	if n := e.Counters().DomainLookups; n != 6 {
		t.Errorf("DomainLookups %d, want 6", n)
	}

	for url, param := range map[string]string{
		"/service-host?host=x":                        "service",
		"/service-host?service=a/b&host=x":            "service",
		"/service-host?service=msgHist&host=http://x": "host",
		"/fail-domain-lookups?count=x":                "count",
		"/fail-domain-lookups?status=302":             "status",
	} {
		r := post(t, ctl+url, "", nil)
		env := envelope(t, r, 400, codeBadRequest, "BAD_REQUEST")
		if msg, _ := env["message"].(string); !strings.Contains(msg, param) {
			t.Errorf("%s: message %q does not name %s", url, msg, param)
		}
	}
	if r := do(t, "GET", ctl+"/service-host?service=msgHist&host=x", nil, nil); r.status != 405 {
		t.Errorf("GET service-host: %d", r.status)
	}
}
