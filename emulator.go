// Copyright 2026 The lpauth Authors
// SPDX-License-Identifier: Apache-2.0

//go:build ccemu

package lpauth

// Built with -tags ccemu (as ./xcaddy.sh does), the binary also carries the
// CC emulator's `ccemu` directive for the no-account demo. A published
// module can name the emulator directly instead:
// --with github.com/lpauth/caddy-lpauth/ccemu/caddyccemu
import _ "github.com/lpauth/caddy-lpauth/ccemu/caddyccemu"
