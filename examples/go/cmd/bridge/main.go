// A bridge network in a throwaway "host" namespace, two containers
// attached to it (one by name, one by path), a ping between them (ping
// via `ip netns exec`), a drift check, detach, teardown: what
// examples/c/bridge.c does, from Go. Run as root.
package main

import (
	"fmt"
	"os"
	"os/exec"

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
	pool, err := cnet.OpenFilePool(dir, "10.244.1.0/24", "")
	if err != nil {
		return err
	}
	defer pool.Close()
	net, err := cnet.EnsureBridgeNetwork(host, pool, cnet.BridgeConfig{Name: "cnet0", MTU: 1500})
	if err != nil {
		return err
	}
	defer net.Close()

	var atts [2]*cnet.Attachment
	var where [2]cnet.ContainerNs
	for i := range atts {
		name := fmt.Sprintf("cn-exg-%d-c%d", pid, i+1)
		defer cnet.DeleteNetNs(name)
		ns, err := cnet.CreateNetNs(name)
		if err != nil {
			return err
		}
		ns.Close()
		// c1 by name, c2 by path (what a runtime passes as CNI_NETNS).
		where[i] = cnet.ContainerNs{Name: name}
		if i == 1 {
			where[i] = cnet.ContainerNs{Path: "/run/netns/" + name}
		}
		id := fmt.Sprintf("c%d-%d", i+1, pid)
		att, err := net.Attach(where[i], id, "eth0")
		if err != nil {
			return err
		}
		defer func(i int, id string) {
			rep, err := net.Detach(&where[i], id, "eth0")
			if err != nil {
				fmt.Fprintln(os.Stderr, "bridge: detach:", err)
				return
			}
			fmt.Printf("detached %s: link removed %v, address %s released\n", id, rep.LinkRemoved, rep.ReleasedIP)
		}(i, id)
		atts[i] = att
		fmt.Printf("attached %s: %s on eth0 in %s (host end %s, gateway %s)\n",
			id, att.IPs[0].Address, name, att.HostVeth, att.IPs[0].Gateway)
	}
	fmt.Println("CNI result of c1:", atts[0].JSON)
	out, err := exec.Command("ip", "netns", "exec", fmt.Sprintf("cn-exg-%d-c1", pid),
		"ping", "-c1", "-W2", atts[1].IP).CombinedOutput()
	if err != nil {
		return fmt.Errorf("ping c1 -> c2 (%s): %v: %s", atts[1].IP, err, out)
	}
	fmt.Printf("ping c1 -> c2 (%s): reply received\n", atts[1].IP)
	drifts, err := net.Check(where[0], fmt.Sprintf("c1-%d", pid), "eth0")
	if err != nil {
		return err
	}
	fmt.Printf("check c1: %d drift(s)\n", len(drifts))
	if len(drifts) != 0 {
		return fmt.Errorf("c1 drifted: %v", drifts)
	}
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
