package main

import (
	"encoding/json"
	"fmt"
	"os"
	"strings"

	"example.com/cnet/cnet"
)

// cmdCheck: the container's attachment is as ADD made it (libcnet's
// drift check, read only) and every object of prevResult (interfaces, IPs,
// routes) is there as it says.
func cmdCheck(c *NetConf, env func(string) string) *Error {
	ce, e := containerEnv(env, true)
	if e != nil {
		return e
	}
	if len(c.PrevResult) == 0 || string(c.PrevResult) == "null" {
		return newError(ErrInvalidConfig, "CHECK needs prevResult (the result of ADD)", "")
	}
	var prev cnet.CNIResult
	if err := json.Unmarshal(c.PrevResult, &prev); err != nil {
		return newError(ErrDecode, "prevResult does not decode", err.Error())
	}
	if _, err := os.Stat(ce.netns); err != nil {
		return newError(ErrUnknownContainer, "the container's namespace "+ce.netns+" cannot be opened", err.Error())
	}
	n, e := networkAsIs(c)
	if e != nil {
		return e
	}
	defer n.close()
	ns := cnet.ContainerNs{Path: ce.netns}
	drifts, err := n.net.Check(ns, ce.id, ce.ifname)
	if err != nil {
		return libError(fmt.Sprintf("check %s/%s", ce.id, ce.ifname), err)
	}
	if len(drifts) > 0 {
		var msgs []string
		for _, d := range drifts {
			msgs = append(msgs, d.Message)
		}
		return newError(ErrDrift, fmt.Sprintf("%s/%s is not as ADD made it", ce.id, ce.ifname), strings.Join(msgs, "; "))
	}
	// Nothing drifted: attaching again is read only and returns the live
	// attachment, which prevResult must agree with.
	live, err := n.net.AttachWith(ns, ce.id, ce.ifname, cnet.AttachOptions{})
	if err != nil {
		return libError(fmt.Sprintf("read %s/%s back", ce.id, ce.ifname), err)
	}
	if diffs := comparePrev(&prev, &live.CNIResult, ce.netns); len(diffs) > 0 {
		return newError(ErrDrift, fmt.Sprintf("%s/%s differs from prevResult", ce.id, ce.ifname), strings.Join(diffs, "; "))
	}
	return nil
}

// comparePrev lists every object of prev that live lacks or has
// otherwise. Objects of other plugins (an interface of another name) are
// theirs to check; ours must all be there.
func comparePrev(prev, live *cnet.CNIResult, netns string) []string {
	var diffs []string
	ours := map[string]cnet.CNIInterface{}
	for _, i := range live.Interfaces {
		ours[i.Name+"\x00"+i.Sandbox] = i
	}
	for _, i := range prev.Interfaces {
		l, ok := ours[i.Name+"\x00"+i.Sandbox]
		if !ok {
			// The container's sandbox may be named differently (netns path).
			if i.Sandbox == netns {
				diffs = append(diffs, fmt.Sprintf("interface %s in %s is missing", i.Name, i.Sandbox))
			}
			continue
		}
		if !strings.EqualFold(l.Mac, i.Mac) {
			diffs = append(diffs, fmt.Sprintf("interface %s has mac %s, prevResult says %s", i.Name, l.Mac, i.Mac))
		}
	}
	for _, want := range live.Interfaces {
		found := false
		for _, i := range prev.Interfaces {
			if i.Name == want.Name {
				found = true
			}
		}
		if !found {
			diffs = append(diffs, fmt.Sprintf("prevResult lacks interface %s", want.Name))
		}
	}
	for _, ip := range prev.IPs {
		found := false
		for _, l := range live.IPs {
			if l.Address == ip.Address {
				found = true
				if ip.Gateway != "" && ip.Gateway != l.Gateway {
					diffs = append(diffs, fmt.Sprintf("address %s has gateway %s, prevResult says %s", ip.Address, l.Gateway, ip.Gateway))
				}
			}
		}
		if !found {
			diffs = append(diffs, fmt.Sprintf("address %s is missing (the container has %s)", ip.Address, addrs(live)))
		}
	}
	if len(prev.IPs) == 0 {
		diffs = append(diffs, "prevResult has no address (the container has "+addrs(live)+")")
	}
	for _, r := range prev.Routes {
		found := false
		for _, l := range live.Routes {
			if l.Dst == r.Dst && (r.GW == "" || r.GW == l.GW) {
				found = true
			}
		}
		if !found {
			diffs = append(diffs, fmt.Sprintf("route to %s via %q is missing", r.Dst, r.GW))
		}
	}
	return diffs
}

func addrs(r *cnet.CNIResult) string {
	var s []string
	for _, ip := range r.IPs {
		s = append(s, ip.Address)
	}
	return strings.Join(s, ", ")
}
