// Copyright 2026 The lpauth Authors
// SPDX-License-Identifier: Apache-2.0

package ccemu

import (
	"context"
	"testing"

	"golang.org/x/oauth2"
	"golang.org/x/oauth2/clientcredentials"
)

// The client lpauth uses gets a token from both endpoints whichever way it
// sends the client's credentials. (Only this test imports x/oauth2; the
// emulator itself does not.)
func TestSentinelWithOAuth2Client(t *testing.T) {
	t.Parallel()
	e, srv := newServer(t, Config{})
	for _, v1 := range []bool{false, true} {
		for name, style := range map[string]oauth2.AuthStyle{
			"params": oauth2.AuthStyleInParams, "header": oauth2.AuthStyleInHeader, "auto": oauth2.AuthStyleAutoDetect,
		} {
			cfg := clientcredentials.Config{
				ClientID: DefaultClientID, ClientSecret: DefaultClientSecret,
				TokenURL: tokenURL(srv, v1), AuthStyle: style,
			}
			tok, err := cfg.Token(context.Background())
			if err != nil {
				t.Fatalf("v1=%v %s: %v", v1, name, err)
			}
			if tok.TokenType != "Bearer" || tok.Expiry.IsZero() != v1 {
				t.Errorf("v1=%v %s: type %q expiry %v", v1, name, tok.TokenType, tok.Expiry)
			}
			if r := appCall(t, srv, tok.AccessToken, true); r.status != 200 {
				t.Errorf("v1=%v %s: data %d", v1, name, r.status)
			}
		}
	}
	// A wrong secret surfaces as the OAuth 2.0 error code.
	cfg := clientcredentials.Config{ClientID: DefaultClientID, ClientSecret: "wrong", TokenURL: tokenURL(srv, false)}
	_, err := cfg.Token(context.Background())
	if re, ok := err.(*oauth2.RetrieveError); !ok || re.ErrorCode != "invalid_client" || re.Response.StatusCode != 401 {
		t.Errorf("wrong secret: %v", err)
	}
	if c := e.Counters(); c.TokenRequestsBadRequest != 0 {
		t.Errorf("the client's requests were refused as bad: %+v", c)
	}
}
