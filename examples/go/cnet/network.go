package cnet

/*
#include <stdlib.h>
#include <cnet.h>
*/
import "C"

import (
	"encoding/json"
	"fmt"
	"runtime"
	"unsafe"
)

// BridgeConfig is what EnsureBridgeNetwork makes: the bridge's name, the
// node subnet ("" for the pool's) and the MTU (0: 1500).
type BridgeConfig struct {
	Name   string
	Subnet string
	MTU    uint32
}

// BridgeNetwork is a bridge on a node with its containers' address pool.
// Its methods may be called from many goroutines at once.
type BridgeNetwork struct{ p *C.cnet_bridge_network }

// EnsureBridgeNetwork makes sure the bridge exists in host's namespace (up,
// the pool's gateway as its address, forwarding on); an existing bridge
// that differs is left unchanged and reported (code CNET_MISMATCH). The
// network shares pool: either may be closed first.
func EnsureBridgeNetwork(host *Handle, pool *Pool, cfg BridgeConfig) (*BridgeNetwork, error) {
	return bridgeNetwork(host, pool, cfg, true)
}

// OpenBridgeNetwork is the network as it is (for CNI DEL, GC, CHECK):
// nothing is created or changed, and a missing bridge is fine.
func OpenBridgeNetwork(host *Handle, pool *Pool, cfg BridgeConfig) (*BridgeNetwork, error) {
	return bridgeNetwork(host, pool, cfg, false)
}

func bridgeNetwork(host *Handle, pool *Pool, cfg BridgeConfig, ensure bool) (*BridgeNetwork, error) {
	var s cstrs
	defer s.free()
	var c C.cnet_bridge_config
	c.name = s.add(cfg.Name)
	c.subnet = s.add(cfg.Subnet)
	c.mtu = C.uint32_t(cfg.MTU)
	var p *C.cnet_bridge_network
	var e *C.cnet_error
	var rc C.cnet_result
	if ensure {
		rc = C.cnet_bridge_network_ensure(host.p, pool.p, &c, &p, &e)
	} else {
		rc = C.cnet_bridge_network_open(host.p, pool.p, &c, &p, &e)
	}
	runtime.KeepAlive(host)
	runtime.KeepAlive(pool)
	if err := check(rc, e); err != nil {
		return nil, err
	}
	n := &BridgeNetwork{p}
	runtime.SetFinalizer(n, (*BridgeNetwork).Close)
	return n, nil
}

// Close releases the network object (the bridge and containers stay).
func (n *BridgeNetwork) Close() {
	if n.p != nil {
		C.cnet_bridge_network_free(n.p)
		n.p = nil
	}
	runtime.SetFinalizer(n, nil)
}

// ContainerNs names a container's network namespace: set exactly one of
// NetNs, Path, Name or Pid.
type ContainerNs struct {
	Name  string // ip netns name (/run/netns/NAME)
	Path  string // /proc/PID/ns/net, a runtime's bind mount (CNI_NETNS)
	Pid   uint32 // a process in the namespace
	NetNs *NetNs // an open namespace
}

func (c ContainerNs) toC(s *cstrs) C.cnet_container_ns {
	var r C.cnet_container_ns
	switch {
	case c.NetNs != nil:
		r.kind = C.CNET_CONTAINER_NS_NETNS
		r.netns = c.NetNs.p
	case c.Path != "":
		r.kind = C.CNET_CONTAINER_NS_PATH
		r.path = s.add(c.Path)
	case c.Name != "":
		r.kind = C.CNET_CONTAINER_NS_NAME
		r.name = s.add(c.Name)
	default:
		r.kind = C.CNET_CONTAINER_NS_PID
		r.pid = C.uint32_t(c.Pid)
	}
	return r
}

// CNIResult is a CNI 1.0.0 result, what a CNI plugin prints for ADD.
type CNIResult struct {
	CNIVersion string         `json:"cniVersion"`
	Interfaces []CNIInterface `json:"interfaces"`
	IPs        []CNIIP        `json:"ips"`
	Routes     []CNIRoute     `json:"routes"`
	DNS        CNIDNS         `json:"dns"`
}

// CNIInterface is an entry of CNIResult.Interfaces.
type CNIInterface struct {
	Name    string `json:"name"`
	Mac     string `json:"mac"`
	Sandbox string `json:"sandbox,omitempty"`
}

// CNIIP is an entry of CNIResult.IPs; Interface indexes Interfaces.
type CNIIP struct {
	Address   string `json:"address"`
	Gateway   string `json:"gateway,omitempty"`
	Interface *int   `json:"interface,omitempty"`
}

// CNIRoute is an entry of CNIResult.Routes.
type CNIRoute struct {
	Dst string `json:"dst"`
	GW  string `json:"gw,omitempty"`
}

// CNIDNS is CNIResult.DNS.
type CNIDNS struct {
	Nameservers []string `json:"nameservers,omitempty"`
	Domain      string   `json:"domain,omitempty"`
	Search      []string `json:"search,omitempty"`
	Options     []string `json:"options,omitempty"`
}

// Attachment is an attached container: the CNI result (decoded from the
// library's JSON, kept raw in JSON) and what the C struct adds.
type Attachment struct {
	CNIResult
	JSON       string // the CNI result as the library printed it
	HostVeth   string // host end of the veth pair, a port of the bridge
	IP         string // the container's address ("10.244.1.2")
	MTU        uint32
	Generation uint64 // the IPAM allocation's generation
}

// Attach attaches a container (CNI ADD): veth pair, address from the pool,
// default route via the gateway; rolled back on any failure.
func (n *BridgeNetwork) Attach(ns ContainerNs, id, ifname string) (*Attachment, error) {
	var s cstrs
	defer s.free()
	where := ns.toC(&s)
	var a *C.cnet_attachment
	var js *C.char
	var e *C.cnet_error
	rc := C.cnet_bridge_network_attach(n.p, &where, s.add(id), s.add(ifname), &a, &js, &e)
	runtime.KeepAlive(n)
	runtime.KeepAlive(ns.NetNs)
	if err := check(rc, e); err != nil {
		return nil, err
	}
	return attachmentOf(a, js)
}

// attachmentOf decodes (and frees) what attach returned.
func attachmentOf(a *C.cnet_attachment, js *C.char) (*Attachment, error) {
	defer C.cnet_attachment_free(a)
	defer C.cnet_string_free(js)
	att := &Attachment{
		JSON:       C.GoString(js),
		HostVeth:   C.GoString(&a.host.name[0]),
		IP:         C.GoString(&a.ip[0]),
		MTU:        uint32(a.mtu),
		Generation: uint64(a.generation),
	}
	if err := json.Unmarshal([]byte(att.JSON), &att.CNIResult); err != nil {
		return nil, fmt.Errorf("decode CNI result: %w", err)
	}
	return att, nil
}

// DetachReport says what Detach did.
type DetachReport struct {
	HostVeth    string
	LinkRemoved bool   // false: the veth pair was already gone
	ReleasedIP  string // "" when the pool held no address
	LeftAlone   string // what was found but not ours, and why
}

// Detach detaches a container (CNI DEL): fine when anything is already
// gone. ns may be nil.
func (n *BridgeNetwork) Detach(ns *ContainerNs, id, ifname string) (DetachReport, error) {
	var s cstrs
	defer s.free()
	var where *C.cnet_container_ns
	if ns != nil {
		w := ns.toC(&s)
		where = &w
	}
	var r *C.cnet_detach_report
	var e *C.cnet_error
	rc := C.cnet_bridge_network_detach(n.p, where, s.add(id), s.add(ifname), &r, &e)
	runtime.KeepAlive(n)
	if ns != nil {
		runtime.KeepAlive(ns.NetNs)
	}
	if err := check(rc, e); err != nil {
		return DetachReport{}, err
	}
	defer C.cnet_detach_report_free(r)
	rep := DetachReport{
		HostVeth:    C.GoString(&r.host_veth[0]),
		LinkRemoved: bool(r.link_removed),
		ReleasedIP:  C.GoString(&r.released_ip[0]),
	}
	if r.left_alone != nil {
		rep.LeftAlone = C.GoString(r.left_alone)
	}
	return rep, nil
}

// Masquerade sets (on) or removes (!on) CNI's ipMasq for the network:
// what its containers send to anywhere but exclude (a CIDR; "" for the
// network's own subnet) and multicast leaves with the host's address. It
// says whether anything was written.
func (n *BridgeNetwork) Masquerade(exclude string, on bool) (bool, error) {
	var s cstrs
	defer s.free()
	var ex *C.char
	if exclude != "" {
		ex = s.add(exclude)
	}
	var changed C.bool
	var e *C.cnet_error
	rc := C.cnet_bridge_network_masquerade(n.p, ex, C.bool(on), &changed, &e)
	runtime.KeepAlive(n)
	if err := check(rc, e); err != nil {
		return false, err
	}
	return bool(changed), nil
}

// Drift is one difference between a container and what Attach made.
type Drift struct {
	Kind     uint32                 // CNET_DRIFT_* number
	KindName string                 // "host_link_down"
	Message  string                 // for people
	Details  map[string]interface{} // the drift as JSON
}

// Check lists how the container differs from what Attach made (empty: not
// at all). Reads only.
func (n *BridgeNetwork) Check(ns ContainerNs, id, ifname string) ([]Drift, error) {
	var s cstrs
	defer s.free()
	where := ns.toC(&s)
	var l *C.cnet_drift_array
	var e *C.cnet_error
	rc := C.cnet_bridge_network_check(n.p, &where, s.add(id), s.add(ifname), &l, &e)
	runtime.KeepAlive(n)
	runtime.KeepAlive(ns.NetNs)
	if err := check(rc, e); err != nil {
		return nil, err
	}
	defer C.cnet_drift_array_free(l)
	items := unsafe.Slice(l.items, int(l.len))
	out := make([]Drift, 0, len(items))
	for _, d := range items {
		g := Drift{Kind: uint32(d.kind), KindName: C.GoString(d.kind_name), Message: C.GoString(d.message)}
		if err := json.Unmarshal([]byte(C.GoString(d.json)), &g.Details); err != nil {
			return nil, fmt.Errorf("decode drift: %w", err)
		}
		out = append(out, g)
	}
	return out, nil
}

// Codes and drift kinds worth testing for.
const (
	Mismatch          = uint32(C.CNET_MISMATCH)
	DriftHostLinkDown = uint32(C.CNET_DRIFT_HOST_LINK_DOWN)
	DriftHostMissing  = uint32(C.CNET_DRIFT_HOST_LINK_MISSING)
)

// AttachOptions asks Attach for an address ("10.244.1.9") and/or a MAC
// of the container's interface ("02:42:ac:11:00:05"); "" for none.
type AttachOptions struct {
	IP, MAC string
}

// AttachWith is Attach with a requested address and/or MAC.
func (n *BridgeNetwork) AttachWith(ns ContainerNs, id, ifname string, o AttachOptions) (*Attachment, error) {
	var s cstrs
	defer s.free()
	where := ns.toC(&s)
	var opts C.cnet_attach_options
	opts.ip = s.add(o.IP)
	opts.mac = s.add(o.MAC)
	var a *C.cnet_attachment
	var js *C.char
	var e *C.cnet_error
	rc := C.cnet_bridge_network_attach_with(n.p, &where, s.add(id), s.add(ifname), &opts, &a, &js, &e)
	runtime.KeepAlive(n)
	runtime.KeepAlive(ns.NetNs)
	if err := check(rc, e); err != nil {
		return nil, err
	}
	return attachmentOf(a, js)
}
