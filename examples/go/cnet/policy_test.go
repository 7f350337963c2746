package cnet

import (
	"fmt"
	"os"
	"os/exec"
	"strings"
	"testing"
)

// Rules and nexthops from Go, read back with ip.
func TestRulesAndNexthops(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root (namespaces)")
	}
	name := fmt.Sprintf("cn-exg-%d-pol", os.Getpid())
	defer DeleteNetNs(name)
	ns, err := CreateNetNs(name)
	if err != nil {
		t.Fatal(err)
	}
	defer ns.Close()
	h, err := NewHandle(ns)
	if err != nil {
		t.Fatal(err)
	}
	defer h.Close()
	ip := func(args ...string) string {
		out, err := exec.Command("ip", append([]string{"-n", name}, args...)...).CombinedOutput()
		if err != nil {
			t.Fatalf("ip %v: %v %s", args, err, out)
		}
		return string(out)
	}

	if err := h.RuleAdd(Rule{Priority: 100, From: "10.244.1.0/24", Table: 100}); err != nil {
		t.Fatal(err)
	}
	a, r, d, err := h.RuleReconcile(0, []Rule{
		{Priority: 100, From: "10.244.1.0/24", Table: 101},
		{Priority: 200, Fwmark: 0x10, Action: RuleBlackhole},
	})
	if err != nil || a != 1 || r != 1 || d != 0 {
		t.Fatalf("reconcile: %d %d %d %v", a, r, d, err)
	}
	rules, err := h.RuleList()
	if err != nil {
		t.Fatal(err)
	}
	ours := 0
	for _, r := range rules {
		if r.Protocol == 119 {
			ours++
		}
	}
	if out := ip("rule", "show"); ours != 2 || !strings.Contains(out, "100:\tfrom 10.244.1.0/24 lookup 101") ||
		!strings.Contains(out, "200:\tfrom all fwmark 0x10 blackhole") {
		t.Fatalf("rules: %d of ours, ip says\n%s", ours, out)
	}
	if err := h.RuleDelete(Rule{Priority: 200, Fwmark: 0x10, Action: RuleBlackhole}); err != nil {
		t.Fatal(err)
	}

	if err := h.LinkAdd(LinkConfig{Kind: LinkVeth, Name: "a0", PeerName: "b0", Up: true, PeerUp: true}); err != nil {
		t.Fatal(err)
	}
	if err := h.AddrAdd("a0", "192.0.2.1/24"); err != nil {
		t.Fatal(err)
	}
	if err := h.NexthopAdd(Nexthop{ID: 1, Via: "192.0.2.2", Dev: "a0"}); err != nil {
		t.Fatal(err)
	}
	if err := h.NexthopAdd(Nexthop{ID: 10, Group: map[uint32]uint16{1: 3}}); err != nil {
		t.Fatal(err)
	}
	if err := h.RouteAddNexthop("10.244.2.0/24", 10); err != nil {
		t.Fatal(err)
	}
	if err := h.NexthopReplace(Nexthop{ID: 1, Via: "192.0.2.3", Dev: "a0"}); err != nil {
		t.Fatal(err)
	}
	nhs, err := h.NexthopList()
	if err != nil || len(nhs) != 2 || nhs[0].Via != "192.0.2.3" || nhs[1].Group[1] != 3 {
		t.Fatalf("nexthops %+v %v", nhs, err)
	}
	if out := ip("route", "show", "10.244.2.0/24"); !strings.Contains(out, "nhid 10") || !strings.Contains(out, "192.0.2.3") {
		t.Fatalf("route: %s", out)
	}
	if err := h.NexthopDelete(10); err != nil {
		t.Fatal(err)
	}
	if err := h.NexthopDelete(10); err != nil {
		t.Fatal(err)
	}
	if out := ip("route", "show", "10.244.2.0/24"); out != "" {
		t.Fatalf("route left: %s", out)
	}
}
