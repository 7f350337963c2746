package cnet

import (
	"errors"
	"fmt"
	"os"
	"os/exec"
	"sync"
	"testing"
)

// 16 containers attached to one network from 16 goroutines at once, then
// checked, pinged and detached: distinct addresses, no drift, nothing left.
func TestBridgeNetworkParallelAttach(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root (namespaces)")
	}
	const n = 16
	pid := os.Getpid()
	hostName := fmt.Sprintf("cn-exn-%d-h", pid)
	defer DeleteNetNs(hostName)
	hostNs, err := CreateNetNs(hostName)
	if err != nil {
		t.Fatal(err)
	}
	defer hostNs.Close()
	host, err := NewHandle(hostNs)
	if err != nil {
		t.Fatal(err)
	}
	defer host.Close()
	pool, err := OpenFilePool(t.TempDir(), "10.244.1.0/24", "")
	if err != nil {
		t.Fatal(err)
	}
	defer pool.Close()
	net, err := EnsureBridgeNetwork(host, pool, BridgeConfig{Name: "cnb0", MTU: 1400})
	if err != nil {
		t.Fatal(err)
	}
	defer net.Close()
	// Another MTU for the same bridge: a typed mismatch, nothing changed.
	_, err = EnsureBridgeNetwork(host, pool, BridgeConfig{Name: "cnb0", MTU: 1500})
	var e *Error
	if !errors.As(err, &e) || e.Code != Mismatch {
		t.Fatalf("want Mismatch, got %v", err)
	}

	atts := make([]*Attachment, n)
	names := make([]string, n)
	var wg sync.WaitGroup
	errs := make(chan error, n)
	for i := 0; i < n; i++ {
		names[i] = fmt.Sprintf("cn-exn-%d-c%d", pid, i)
		defer DeleteNetNs(names[i])
		wg.Add(1)
		go func(i int) {
			defer wg.Done()
			ns, err := CreateNetNs(names[i])
			if err != nil {
				errs <- err
				return
			}
			defer ns.Close()
			a, err := net.Attach(ContainerNs{NetNs: ns}, fmt.Sprintf("c%d", i), "eth0")
			if err != nil {
				errs <- err
				return
			}
			if a.CNIVersion != "1.0.0" || len(a.IPs) != 1 || a.MTU != 1400 {
				errs <- fmt.Errorf("attach %d: %+v", i, a)
				return
			}
			d, err := net.Check(ContainerNs{Name: names[i]}, fmt.Sprintf("c%d", i), "eth0")
			if err != nil || len(d) != 0 {
				errs <- fmt.Errorf("check %d: %v %v", i, d, err)
				return
			}
			atts[i] = a
		}(i)
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	seen := map[string]bool{}
	for _, a := range atts {
		if seen[a.IP] {
			t.Fatalf("address %s handed out twice", a.IP)
		}
		seen[a.IP] = true
	}
	out, err := exec.Command("ip", "netns", "exec", names[0], "ping", "-c1", "-W2", atts[n-1].IP).CombinedOutput()
	if err != nil {
		t.Fatalf("ping: %v: %s", err, out)
	}
	// Someone sets a host end down: check says so.
	if out, err := exec.Command("ip", "-n", hostName, "link", "set", atts[0].HostVeth, "down").CombinedOutput(); err != nil {
		t.Fatalf("%v: %s", err, out)
	}
	d, err := net.Check(ContainerNs{Name: names[0]}, "c0", "eth0")
	found := false
	for _, x := range d {
		found = found || (x.Kind == DriftHostLinkDown && x.Details["kind"] == "host_link_down")
	}
	if err != nil || !found {
		t.Fatalf("want host_link_down, got %+v %v", d, err)
	}
	for i := 0; i < n; i++ {
		wg.Add(1)
		go func(i int) {
			defer wg.Done()
			rep, err := net.Detach(nil, fmt.Sprintf("c%d", i), "eth0")
			if err != nil || !rep.LinkRemoved || rep.ReleasedIP != atts[i].IP {
				t.Errorf("detach %d: %+v %v", i, rep, err)
			}
		}(i)
	}
	wg.Wait()
	// Detach again: CNI DEL semantics.
	if rep, err := net.Detach(&ContainerNs{Name: names[0]}, "c0", "eth0"); err != nil || rep.LinkRemoved || rep.ReleasedIP != "" {
		t.Fatalf("second detach: %+v %v", rep, err)
	}
	if _, err := net.Attach(ContainerNs{Name: names[0] + "-gone"}, "cx", "eth0"); !errors.As(err, &e) || e.Code != NotFound {
		t.Fatalf("want NotFound, got %v", err)
	}
}
