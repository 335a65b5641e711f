//go:build !unix

package main

import "time"

// processCPU is not implemented here: no cpu-ns/op metric is reported.
func processCPU() (time.Duration, bool) { return 0, false }
