// The cost of a call through libcnet from Go (cgo), run by
// scripts/bench-ffi, which makes the namespace: 10,000 route lookups
// (`ip route get DST`) through Handle.RouteLookup, the idiomatic wrapper
// (C strings made and freed, the result copied into Go strings). Prints
// "RESULT go-cgo <ns per call>". Usage: bench-lookup NS DST
package main

import (
	"fmt"
	"os"
	"time"

	"example.com/cnet/cnet"
)

const n = 10000

func main() {
	if len(os.Args) != 3 {
		fmt.Fprintln(os.Stderr, "usage: bench-lookup NS DST")
		os.Exit(2)
	}
	ns, err := cnet.OpenNetNsPath("/run/netns/" + os.Args[1])
	if err != nil {
		fmt.Fprintln(os.Stderr, "bench-lookup:", err)
		os.Exit(1)
	}
	defer ns.Close()
	h, err := cnet.NewHandle(ns)
	if err != nil {
		fmt.Fprintln(os.Stderr, "bench-lookup:", err)
		os.Exit(1)
	}
	defer h.Close()
	var l cnet.Lookup
	for i := 0; i < 1000; i++ {
		if l, err = h.RouteLookup(os.Args[2]); err != nil {
			fmt.Fprintln(os.Stderr, "bench-lookup:", err)
			os.Exit(1)
		}
	}
	t0 := time.Now()
	for i := 0; i < n; i++ {
		if l, err = h.RouteLookup(os.Args[2]); err != nil {
			fmt.Fprintln(os.Stderr, "bench-lookup:", err)
			os.Exit(1)
		}
	}
	el := time.Since(t0)
	per := float64(el.Nanoseconds()) / n
	fmt.Printf("%16s: %d lookups in %.1f ms, %.0f ns/call (dev %s)\n", "go-cgo", n, float64(el.Microseconds())/1e3, per, l.Dev)
	fmt.Printf("RESULT go-cgo %.0f\n", per)
}
