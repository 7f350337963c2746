package main

import (
	"encoding/json"
	"fmt"
	"os"
	"strings"

	"example.com/cnet/cnet"
)

// node is what every verb but VERSION opens: the store, the pool of the
// node subnet and, for those that touch links, the bridge network.
type node struct {
	store *cnet.Store
	pool  *cnet.Pool
	host  *cnet.Handle
	net   *cnet.BridgeNetwork
}

func (n *node) close() {
	if n.net != nil {
		n.net.Close()
	}
	if n.host != nil {
		n.host.Close()
	}
	if n.pool != nil {
		n.pool.Close()
	}
	if n.store != nil {
		n.store.Close()
	}
}

// openPool opens the store and the pool of the node subnet (leasing the
// subnet from the cluster network when the config names one).
func openPool(c *NetConf) (*node, *Error) {
	n := &node{}
	var err error
	if e := c.Store.Etcd; e != nil {
		n.store, err = cnet.OpenEtcdStore(e.Endpoints, e.Prefix, e.TimeoutMs,
			cnet.EtcdOptions{CAFile: e.CAFile, CertFile: e.CertFile, KeyFile: e.KeyFile})
	} else {
		n.store, err = cnet.OpenFileStore(c.Store.Dir)
	}
	if err != nil {
		return nil, libError("open the IPAM store", err)
	}
	subnet := c.Subnet
	if subnet == "" {
		subnet, err = n.store.LeaseNodeSubnet(c.ClusterNetwork, c.NodeSubnetLen, c.Node, c.LeaseTTLSeconds)
		if err != nil {
			n.close()
			return nil, libError(fmt.Sprintf("lease a node subnet of %s for %s", c.ClusterNetwork, c.Node), err)
		}
	}
	n.pool, err = n.store.Pool(cnet.PoolConfig{Subnet: subnet, RangeStart: c.RangeStart, RangeEnd: c.RangeEnd, Gateway: c.Gateway})
	if err != nil {
		n.close()
		return nil, libError("open the pool of "+subnet, err)
	}
	return n, nil
}

// openNetwork is openPool and the bridge network, ensured in the
// namespace this process runs in (the host's, as the runtime calls us).
func openNetwork(c *NetConf) (*node, *Error) {
	return network(c, true)
}

// networkAsIs is openNetwork for DEL, GC and CHECK: the bridge is neither
// created nor changed (a DEL after the bridge went must not make it again).
func networkAsIs(c *NetConf) (*node, *Error) {
	return network(c, false)
}

func network(c *NetConf, ensure bool) (*node, *Error) {
	n, e := openPool(c)
	if e != nil {
		return nil, e
	}
	self, err := cnet.OpenNetNsPath("/proc/self/ns/net")
	if err != nil {
		n.close()
		return nil, libError("open the host namespace", err)
	}
	defer self.Close()
	if n.host, err = cnet.NewHandle(self); err != nil {
		n.close()
		return nil, libError("open a netlink handle in the host namespace", err)
	}
	bc := cnet.BridgeConfig{Name: c.Bridge, MTU: c.MTU}
	if ensure {
		n.net, err = cnet.EnsureBridgeNetwork(n.host, n.pool, bc)
	} else {
		n.net, err = cnet.OpenBridgeNetwork(n.host, n.pool, bc)
	}
	if err != nil {
		n.close()
		return nil, libError("open bridge network "+c.Bridge, err)
	}
	return n, nil
}

// callEnv is the container's part of the environment.
type callEnv struct {
	id, netns, ifname string
}

func containerEnv(env func(string) string, needNetns bool) (callEnv, *Error) {
	ce := callEnv{id: env("CNI_CONTAINERID"), netns: env("CNI_NETNS"), ifname: env("CNI_IFNAME")}
	var missing []string
	if ce.id == "" {
		missing = append(missing, "CNI_CONTAINERID")
	}
	if ce.ifname == "" {
		missing = append(missing, "CNI_IFNAME")
	}
	if needNetns && ce.netns == "" {
		missing = append(missing, "CNI_NETNS")
	}
	if len(missing) > 0 {
		return ce, newError(ErrInvalidEnv, "missing environment variables: "+strings.Join(missing, ", "), "")
	}
	return ce, nil
}

func cmdAdd(c *NetConf, env func(string) string) (interface{}, *Error) {
	ce, e := containerEnv(env, true)
	if e != nil {
		return nil, e
	}
	prev, e := chainedPrev(c.PrevResult)
	if e != nil {
		return nil, e
	}
	args, e := parseCNIArgs(env("CNI_ARGS"))
	if e != nil {
		return nil, e
	}
	ip, e := c.requestedIP(args.IP)
	if e != nil {
		return nil, e
	}
	mac, e := c.requestedMAC(args.MAC)
	if e != nil {
		return nil, e
	}
	if _, err := os.Stat(ce.netns); err != nil {
		return nil, newError(ErrUnknownContainer, "the container's namespace "+ce.netns+" cannot be opened", err.Error())
	}
	n, e := openNetwork(c)
	if e != nil {
		return nil, e
	}
	defer n.close()
	if c.IPMasq {
		// Network-wide, like the bridge: made once, kept for every
		// container (DEL leaves it); beyond the cluster network when the
		// config names one, so other nodes' containers see the address.
		if _, err := n.net.Masquerade(c.ClusterNetwork, true); err != nil {
			return nil, libError("set up ipMasq for "+c.Bridge, err)
		}
	}
	att, err := n.net.AttachWith(cnet.ContainerNs{Path: ce.netns}, ce.id, ce.ifname, cnet.AttachOptions{IP: ip, MAC: mac})
	if err != nil {
		return nil, libError(fmt.Sprintf("attach %s/%s", ce.id, ce.ifname), err)
	}
	var result map[string]interface{}
	if err := json.Unmarshal([]byte(att.JSON), &result); err != nil {
		return nil, newError(ErrDecode, "the library's CNI result does not decode", err.Error())
	}
	result["cniVersion"] = c.CNIVersion
	// What a plugin before us said that is not an interface or address
	// (DNS) passes through.
	if dns, ok := prev["dns"]; ok && isEmpty(result["dns"]) {
		result["dns"] = dns
	}
	return result, nil
}

// chainedPrev checks an ADD's prevResult: a plugin before cnet may have
// said something (DNS), but none may have made an interface or an address
// (cnet makes them; two such plugins on one interface are a configuration
// error, refused with code 102).
func chainedPrev(raw json.RawMessage) (map[string]interface{}, *Error) {
	if len(raw) == 0 || string(raw) == "null" {
		return nil, nil
	}
	var prev map[string]interface{}
	if err := json.Unmarshal(raw, &prev); err != nil {
		return nil, newError(ErrDecode, "prevResult does not decode", err.Error())
	}
	if !isEmpty(prev["interfaces"]) || !isEmpty(prev["ips"]) {
		return nil, newError(ErrChain,
			"cnet makes the container's interface and address: it must be the first plugin of a chain",
			"prevResult already has interfaces or addresses (a plugin such as bridge ran before cnet): "+
				"put cnet first, and chained plugins (portmap, bandwidth, tuning, firewall) after it")
	}
	return prev, nil
}

// isEmpty: absent, null, or an empty list or object.
func isEmpty(v interface{}) bool {
	switch x := v.(type) {
	case nil:
		return true
	case []interface{}:
		return len(x) == 0
	case map[string]interface{}:
		return len(x) == 0
	}
	return false
}

func cmdDel(c *NetConf, env func(string) string) *Error {
	ce, e := containerEnv(env, false)
	if e != nil {
		return e
	}
	n, e := networkAsIs(c)
	if e != nil {
		return e
	}
	defer n.close()
	// A namespace already gone is fine: the host end is found by its name.
	var where *cnet.ContainerNs
	if ce.netns != "" {
		if _, err := os.Stat(ce.netns); err == nil {
			where = &cnet.ContainerNs{Path: ce.netns}
		}
	}
	if _, err := n.net.Detach(where, ce.id, ce.ifname); err != nil {
		return libError(fmt.Sprintf("detach %s/%s", ce.id, ce.ifname), err)
	}
	return nil
}

func cmdGC(c *NetConf) *Error {
	n, e := networkAsIs(c)
	if e != nil {
		return e
	}
	defer n.close()
	allocs, err := n.pool.List()
	if err != nil {
		return libError("list the pool", err)
	}
	valid := map[Attachment]bool{}
	for _, a := range c.ValidAttachments {
		valid[a] = true
	}
	var errs []string
	for _, a := range allocs {
		if valid[Attachment{a.ContainerID, a.Ifname}] {
			continue
		}
		// Detach also deletes a host end left over, and releases the address.
		if _, err := n.net.Detach(nil, a.ContainerID, a.Ifname); err != nil {
			errs = append(errs, fmt.Sprintf("%s/%s (%s): %v", a.ContainerID, a.Ifname, a.Addr, err))
		}
	}
	if len(errs) > 0 {
		return newError(ErrLibrary, "GC could not release every stale attachment", strings.Join(errs, "; "))
	}
	return nil
}

func cmdStatus(c *NetConf) *Error {
	n, e := openPool(c)
	if e != nil {
		e.Details = fmt.Sprintf("%s (code %d: %s)", e.Details, e.Code, e.Msg)
		e.Code = ErrNotAvailable
		e.Msg = "the IPAM store is not usable: " + e.Msg
		return e
	}
	defer n.close()
	if _, err := n.pool.List(); err != nil {
		e := libError("read the pool", err)
		e.Code = ErrNotAvailable
		return e
	}
	return nil
}
