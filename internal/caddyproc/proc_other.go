// Copyright 2026 The lpauth Authors
// SPDX-License-Identifier: Apache-2.0

//go:build !linux

package caddyproc

import "syscall"

func dieWithParent() *syscall.SysProcAttr { return nil }
