// Copyright 2026 The lpauth Authors
// SPDX-License-Identifier: Apache-2.0

package lpauth

import (
	"os"
	"path/filepath"
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

// A secret read from a file ({file.*}, re-read at every reload: the way to
// rotate it without a restart) loses its trailing newline; a missing or
// empty file names the field and the file, never the content.
func TestPlaceholderSecretFromFile(t *testing.T) {
	dir := t.TempDir()
	full := filepath.Join(dir, "lp_password")
	if err := os.WriteFile(full, []byte("s3cret-from-file\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	empty := filepath.Join(dir, "empty")
	if err := os.WriteFile(empty, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	repl := caddy.NewReplacer()
	if got, err := expandField(repl, "password", "{file."+full+"}", true); err != nil || got != "s3cret-from-file" {
		t.Fatalf("expanded %q, %v", got, err)
	}
	for _, path := range []string{empty, filepath.Join(dir, "missing")} {
		_, err := expandField(repl, "password", "{file."+path+"}", true)
		want := "password: {file." + path + "}: the file is missing, unreadable or empty"
		if err == nil || err.Error() != want {
			t.Errorf("error %v, want %q", err, want)
		}
	}
}
