// Copyright 2026 The lpauth Authors
// SPDX-License-Identifier: Apache-2.0

//go:build !race

package lpauth

const raceEnabled = false
