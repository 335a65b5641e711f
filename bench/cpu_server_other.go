//go:build !linux

package main

import "time"

// serverCPU is not implemented here: the report leaves the database's CPU
// time out.
func serverCPU() (time.Duration, bool) { return 0, false }

// pidsCPU is not implemented here either.
func pidsCPU([]int) (time.Duration, bool) { return 0, false }

// ownClientPorts is not implemented here: the suite cannot tell its own
// backends from other clients'.
func ownClientPorts(int) []int { return nil }
