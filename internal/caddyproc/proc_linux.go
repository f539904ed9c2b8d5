// Copyright 2026 The lpauth Authors
// SPDX-License-Identifier: Apache-2.0

package caddyproc

import "syscall"

// dieWithParent makes the kernel end caddy should the benchmark die without
// stopping it.
func dieWithParent() *syscall.SysProcAttr {
	return &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
}
