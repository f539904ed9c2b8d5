// Copyright 2026 The lpauth Authors
// SPDX-License-Identifier: Apache-2.0

//go:build race

package lpauth

// raceEnabled: the race detector's builds drop pooled objects on purpose,
// so allocation counts mean nothing under it.
const raceEnabled = true
