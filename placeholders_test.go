// Copyright 2026 The lpauth Authors
// SPDX-License-Identifier: Apache-2.0

package lpauth

import (
	"strings"
	"testing"

	"github.com/caddyserver/caddy/v2"
)

func TestPlaceholderExpandField(t *testing.T) {
	t.Setenv("LPAUTH_TEST_SET", "value")
	t.Setenv("LPAUTH_TEST_EMPTY", "")
	repl := caddy.NewReplacer()
	if got, err := expandField(repl, "account_id", "{env.LPAUTH_TEST_SET}-x", false); err != nil || got != "value-x" {
		t.Fatalf("expanded %q, %v", got, err)
	}
	if got, err := expandField(repl, "password", "", true); err != nil || got != "" {
		t.Fatalf("empty value: %q, %v", got, err)
	}
	for _, tc := range []struct {
		field, value string
		secret       bool
		want, never  string
	}{
		{"account_id", "{env.LPAUTH_TEST_EMPTY}", false, "account_id: ", ""},
		{"password", "{env.LPAUTH_TEST_EMPTY}", true, "password: {env.LPAUTH_TEST_EMPTY} is unset or empty", ""},
		{"password", "hunter2{braces}inline", true, "password: a placeholder in it is unknown or empty", "hunter2"},
	} {
		_, err := expandField(repl, tc.field, tc.value, tc.secret)
		if err == nil || !strings.HasPrefix(err.Error(), tc.want) {
			t.Errorf("%s %q: error %v, want it to start with %q", tc.field, tc.value, err, tc.want)
		} else if tc.never != "" && strings.Contains(err.Error(), tc.never) {
			t.Errorf("%s: error %q shows the secret", tc.field, err)
		}
	}
}
