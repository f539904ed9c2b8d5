// Copyright 2026 The lpauth Authors
// SPDX-License-Identifier: Apache-2.0

package lpauth

import (
	"strings"
	"testing"

	"github.com/lpauth/caddy-lpauth/internal/cc"
)

// A config mistake names the field, never a secret: not a secret given as
// two words, not the user info or query of a URL.
func TestConfigErrorsNeverShowSecrets(t *testing.T) {
	t.Parallel()
	for _, field := range []string{"password", "secret", "access_token", "access_token_secret", "encryption_key"} {
		d, _ := caddyfileDispenser("lpauth {\n" + field + " S3CRET-a S3CRET-b\n}")
		var h Handler
		err := h.UnmarshalCaddyfile(d)
		if err == nil {
			t.Fatalf("%s with two values was accepted", field)
		}
		if strings.Contains(err.Error(), "S3CRET") || !strings.Contains(err.Error(), field+" takes one value") {
			t.Errorf("%s: %v; want the field named and no value shown", field, err)
		}
	}
	// A value that is not a secret is still quoted, to help.
	d, _ := caddyfileDispenser("lpauth {\nusername a b\n}")
	var h Handler
	if err := h.UnmarshalCaddyfile(d); err == nil || !strings.Contains(err.Error(), `got another: "b"`) {
		t.Errorf("username with two values: %v", err)
	}

	for _, tc := range []struct{ csds, domain, want string }{
		{csds: "https://user:S3CRET@api.liveperson.net", want: `"https://…@api.liveperson.net": only scheme, host, port and path are allowed`},
		{csds: "https://api.liveperson.net/?token=S3CRET", want: "only scheme, host, port and path are allowed"},
		{csds: "https://api.liveperson.net/#S3CRET", want: "only scheme, host, port and path are allowed"},
		{csds: "http://user:S3CRET@10.1.2.3", want: "csds:"},
		{domain: "user:S3CRET@va.agentvep.liveperson.net", want: "domain:"},
		{csds: "https://us%65r:S3CRET@api.liveperson.net", want: "csds:"},
	} {
		_, err := cc.NewClient(cc.ClientConfig{CSDS: tc.csds, Domain: tc.domain})
		if err == nil {
			t.Fatalf("%+v accepted", tc)
		}
		if strings.Contains(err.Error(), "S3CRET") || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%+v: %v; want %q and no secret", tc, err, tc.want)
		}
	}
}
