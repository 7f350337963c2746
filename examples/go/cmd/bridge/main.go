// Two containers on a bridge network in throwaway namespaces, a ping
// between them (the trace's probe, proved by capture), then teardown: what
// examples/c/bridge.c does, from Go. Run as root.
package main

import (
	"fmt"
	"os"
	"strings"

	"example.com/cnet/cnet"
)

func run(dir string) error {
	pid := os.Getpid()
	hostName := fmt.Sprintf("cn-exg-%d-h", pid)
	defer cnet.DeleteNetNs(hostName)
	hostNs, err := cnet.CreateNetNs(hostName)
	if err != nil {
		return err
	}
	defer hostNs.Close()
	host, err := cnet.NewHandle(hostNs)
	if err != nil {
		return err
	}
	defer host.Close()
	if err := host.LinkAdd(cnet.LinkConfig{Kind: cnet.LinkBridge, Name: "cnet0", Up: true}); err != nil {
		return err
	}
	if err := host.AddrAdd("cnet0", "10.244.1.1/24"); err != nil {
		return err
	}
	pool, err := cnet.OpenFilePool(dir, "10.244.1.0/24", "10.244.1.1")
	if err != nil {
		return err
	}
	defer pool.Close()
	var nss [2]*cnet.NetNs
	var addrs [2]string
	for i := range nss {
		name := fmt.Sprintf("cn-exg-%d-c%d", pid, i+1)
		defer cnet.DeleteNetNs(name)
		ns, err := cnet.CreateNetNs(name)
		if err != nil {
			return err
		}
		defer ns.Close()
		nss[i] = ns
		h, err := cnet.NewHandle(ns)
		if err != nil {
			return err
		}
		defer h.Close()
		veth := fmt.Sprintf("veth-c%d", i+1)
		if err := host.LinkAdd(cnet.LinkConfig{Kind: cnet.LinkVeth, Name: veth, PeerName: "eth0",
			PeerNetNs: ns, Master: "cnet0", Up: true, PeerUp: true}); err != nil {
			return err
		}
		id := fmt.Sprintf("c%d-%d", i+1, pid)
		addr, cidr, err := pool.Allocate(id, "eth0")
		if err != nil {
			return err
		}
		defer pool.Release(id, "eth0")
		addrs[i] = addr
		if err := h.AddrAdd("eth0", cidr); err != nil {
			return err
		}
		if err := h.LinkSetUp("lo"); err != nil {
			return err
		}
		if err := h.RouteAddVia("default", "10.244.1.1"); err != nil {
			return err
		}
		fmt.Printf("attached %s: %s on eth0 in %s\n", id, cidr, name)
	}
	report, err := cnet.Trace(nss[0], addrs[1], true, 2000)
	if err != nil {
		return err
	}
	if !strings.Contains(report, `"replied":true`) {
		return fmt.Errorf("no echo reply from %s: %s", addrs[1], report)
	}
	fmt.Printf("ping c1 -> c2 (%s): reply received\n", addrs[1])
	return nil
}

func main() {
	fmt.Println("libcnet", cnet.Version())
	dir := "/tmp/cnet-example-go-ipam"
	if len(os.Args) > 1 {
		dir = os.Args[1]
	}
	if err := run(dir); err != nil {
		fmt.Fprintln(os.Stderr, "bridge:", err)
		os.Exit(1)
	}
	fmt.Println("torn down")
}
