// Package cnet is a thin Go binding of libcnet (cnet's C ABI): errors are
// Go error values keeping the code, errno and kernel text; handles are
// closed by Close (a finalizer is only a backstop). Every call works in the
// namespace of its handle, whatever OS thread the goroutine runs on.
package cnet

/*
#cgo pkg-config: cnet
#include <stdlib.h>
#include <cnet.h>
*/
import "C"

import (
	"fmt"
	"runtime"
	"unsafe"
)

// Error is a failed libcnet call.
type Error struct {
	Code    uint32 // CNET_* result code
	Name    string // "CNET_NOT_FOUND"
	Errno   int    // the kernel's errno, 0 if none
	Kernel  string // the kernel's extended-ACK text, "" if none
	Message string
}

func (e *Error) Error() string { return e.Message + " (" + e.Name + ")" }

// Result codes worth testing for.
const (
	NotFound      = uint32(C.CNET_NOT_FOUND)
	AlreadyExists = uint32(C.CNET_ALREADY_EXISTS)
	InvalidUTF8   = uint32(C.CNET_INVALID_UTF8)
	NullArgument  = uint32(C.CNET_NULL_ARGUMENT)
)

func check(rc C.cnet_result, err *C.cnet_error) error {
	if rc == C.CNET_OK {
		return nil
	}
	e := &Error{Code: uint32(rc), Name: C.GoString(C.cnet_result_name(rc))}
	if err != nil {
		e.Message = C.GoString(C.cnet_error_message(err))
		e.Errno = int(C.cnet_error_errno(err))
		if k := C.cnet_error_kernel_message(err); k != nil {
			e.Kernel = C.GoString(k)
		}
		C.cnet_error_free(err)
	}
	return e
}

type cstrs []*C.char

func (s *cstrs) add(v string) *C.char {
	if v == "" {
		return nil
	}
	c := C.CString(v)
	*s = append(*s, c)
	return c
}
func (s cstrs) free() {
	for _, c := range s {
		C.free(unsafe.Pointer(c))
	}
}

// Version of the linked library.
func Version() string { return C.GoString(C.cnet_version()) }

// NetNs is an open network namespace.
type NetNs struct{ p *C.cnet_netns }

func newNetNs(p *C.cnet_netns) *NetNs {
	n := &NetNs{p}
	runtime.SetFinalizer(n, (*NetNs).Close)
	return n
}

// CreateNetNs is `ip netns add name`.
func CreateNetNs(name string) (*NetNs, error) {
	var s cstrs
	defer s.free()
	var p *C.cnet_netns
	var e *C.cnet_error
	if err := check(C.cnet_netns_create(s.add(name), &p, &e), e); err != nil {
		return nil, err
	}
	return newNetNs(p), nil
}

// OpenNetNsPath opens a namespace by path (/proc/PID/ns/net).
func OpenNetNsPath(path string) (*NetNs, error) {
	var s cstrs
	defer s.free()
	var p *C.cnet_netns
	var e *C.cnet_error
	if err := check(C.cnet_netns_open_path(s.add(path), &p, &e), e); err != nil {
		return nil, err
	}
	return newNetNs(p), nil
}

// DeleteNetNs is `ip netns del name`; fine if already gone.
func DeleteNetNs(name string) error {
	var s cstrs
	defer s.free()
	var e *C.cnet_error
	return check(C.cnet_netns_delete(s.add(name), nil, &e), e)
}

// Close releases the namespace object.
func (n *NetNs) Close() {
	if n.p != nil {
		C.cnet_netns_free(n.p)
		n.p = nil
	}
	runtime.SetFinalizer(n, nil)
}

// Handle works in one namespace, from any goroutine.
type Handle struct{ p *C.cnet_handle }

// NewHandle opens a netlink handle in ns.
func NewHandle(ns *NetNs) (*Handle, error) {
	var p *C.cnet_handle
	var e *C.cnet_error
	rc := C.cnet_handle_new(ns.p, &p, &e)
	runtime.KeepAlive(ns)
	if err := check(rc, e); err != nil {
		return nil, err
	}
	h := &Handle{p}
	runtime.SetFinalizer(h, (*Handle).Close)
	return h, nil
}

// Close releases the handle.
func (h *Handle) Close() {
	if h.p != nil {
		C.cnet_handle_free(h.p)
		h.p = nil
	}
	runtime.SetFinalizer(h, nil)
}

// LinkConfig is what LinkAdd creates.
type LinkConfig struct {
	Kind      uint32 // LinkVeth, LinkBridge, …
	Name      string
	MTU       uint32
	Up        bool
	Master    string
	PeerName  string
	PeerNetNs *NetNs
	PeerUp    bool
}

// Link kinds.
const (
	LinkVeth   = uint32(C.CNET_LINK_VETH)
	LinkBridge = uint32(C.CNET_LINK_BRIDGE)
)

// LinkAdd is `ip link add …`.
func (h *Handle) LinkAdd(c LinkConfig) error {
	var s cstrs
	defer s.free()
	var cfg C.cnet_link_config
	cfg.kind = C.cnet_link_kind(c.Kind)
	cfg.name = s.add(c.Name)
	cfg.mtu = C.uint32_t(c.MTU)
	cfg.up = C.bool(c.Up)
	cfg.master = s.add(c.Master)
	cfg.peer_name = s.add(c.PeerName)
	if c.PeerNetNs != nil {
		cfg.peer_netns = c.PeerNetNs.p
	}
	cfg.peer_up = C.bool(c.PeerUp)
	var e *C.cnet_error
	rc := C.cnet_link_add(h.p, &cfg, &e)
	runtime.KeepAlive(h)
	runtime.KeepAlive(c.PeerNetNs)
	return check(rc, e)
}

// LinkSetUp is `ip link set name up`.
func (h *Handle) LinkSetUp(name string) error {
	var s cstrs
	defer s.free()
	var e *C.cnet_error
	rc := C.cnet_link_set_up(h.p, s.add(name), &e)
	runtime.KeepAlive(h)
	return check(rc, e)
}

// AddrAdd is `ip addr add cidr dev dev`.
func (h *Handle) AddrAdd(dev, cidr string) error {
	var s cstrs
	defer s.free()
	var e *C.cnet_error
	rc := C.cnet_addr_add(h.p, s.add(dev), s.add(cidr), &e)
	runtime.KeepAlive(h)
	return check(rc, e)
}

// RouteAddVia is `ip route add dst via gw`.
func (h *Handle) RouteAddVia(dst, gw string) error {
	var s cstrs
	defer s.free()
	var r C.cnet_route
	r.dst = s.add(dst)
	r.via = s.add(gw)
	var e *C.cnet_error
	rc := C.cnet_route_add(h.p, &r, &e)
	runtime.KeepAlive(h)
	return check(rc, e)
}

// Lookup is the kernel's decision for dst (`ip route get dst`).
type Lookup struct{ Dev, Gateway, PrefSrc string }

// RouteLookup is `ip route get dst`.
func (h *Handle) RouteLookup(dst string) (Lookup, error) {
	var s cstrs
	defer s.free()
	var r C.cnet_route_lookup_result
	var e *C.cnet_error
	rc := C.cnet_route_lookup(h.p, s.add(dst), nil, &r, &e)
	runtime.KeepAlive(h)
	if err := check(rc, e); err != nil {
		return Lookup{}, err
	}
	return Lookup{C.GoString(&r.dev[0]), C.GoString(&r.gateway[0]), C.GoString(&r.prefsrc[0])}, nil
}

// Trace explains (and with capture proves, by an ICMP echo) the path from
// ns to dst; the report is JSON.
func Trace(from *NetNs, dst string, capture bool, timeoutMs uint32) (string, error) {
	var s cstrs
	defer s.free()
	var out *C.char
	var e *C.cnet_error
	rc := C.cnet_trace(from.p, s.add(dst), nil, C.bool(capture), C.uint32_t(timeoutMs), &out, &e)
	runtime.KeepAlive(from)
	if err := check(rc, e); err != nil {
		return "", err
	}
	defer C.cnet_string_free(out)
	return C.GoString(out), nil
}

// Pool hands out container addresses from a node subnet.
type Pool struct {
	store *C.cnet_ipam_store
	p     *C.cnet_pool
}

// OpenFilePool opens (creating) a file store in dir and its pool of subnet.
func OpenFilePool(dir, subnet, gateway string) (*Pool, error) {
	var s cstrs
	defer s.free()
	var st *C.cnet_ipam_store
	var e *C.cnet_error
	if err := check(C.cnet_ipam_store_open_file(s.add(dir), &st, &e), e); err != nil {
		return nil, err
	}
	var pc C.cnet_pool_config
	pc.subnet = s.add(subnet)
	pc.gateway = s.add(gateway)
	var p *C.cnet_pool
	if err := check(C.cnet_ipam_store_pool(st, &pc, &p, &e), e); err != nil {
		C.cnet_ipam_store_free(st)
		return nil, err
	}
	pool := &Pool{st, p}
	runtime.SetFinalizer(pool, (*Pool).Close)
	return pool, nil
}

// Allocate returns the address (with prefix) of container id's ifname.
func (p *Pool) Allocate(id, ifname string) (addr, cidr string, err error) {
	var s cstrs
	defer s.free()
	var a *C.cnet_alloc
	var e *C.cnet_error
	rc := C.cnet_pool_allocate(p.p, s.add(id), s.add(ifname), &a, &e)
	runtime.KeepAlive(p)
	if err := check(rc, e); err != nil {
		return "", "", err
	}
	defer C.cnet_alloc_free(a)
	return C.GoString(&a.addr[0]), C.GoString(&a.cidr[0]), nil
}

// Release frees container id's address (fine if it holds none).
func (p *Pool) Release(id, ifname string) error {
	var s cstrs
	defer s.free()
	var e *C.cnet_error
	rc := C.cnet_pool_release(p.p, s.add(id), s.add(ifname), nil, &e)
	runtime.KeepAlive(p)
	return check(rc, e)
}

// Close releases the pool and its store.
func (p *Pool) Close() {
	if p.p != nil {
		C.cnet_pool_free(p.p)
		C.cnet_ipam_store_free(p.store)
		p.p, p.store = nil, nil
	}
	runtime.SetFinalizer(p, nil)
}

// String makes Error printable in %v of a lookup.
func (l Lookup) String() string {
	return fmt.Sprintf("dev %s via %q src %s", l.Dev, l.Gateway, l.PrefSrc)
}
