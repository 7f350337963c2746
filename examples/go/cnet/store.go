package cnet

/*
#include <stdlib.h>
#include <cnet.h>
*/
import "C"

import (
	"runtime"
	"unsafe"
)

// Store is an IPAM store: a file store directory or an etcd cluster.
type Store struct{ p *C.cnet_ipam_store }

// OpenFileStore opens (creating) a file store in dir.
func OpenFileStore(dir string) (*Store, error) {
	var s cstrs
	defer s.free()
	var st *C.cnet_ipam_store
	var e *C.cnet_error
	if err := check(C.cnet_ipam_store_open_file(s.add(dir), &st, &e), e); err != nil {
		return nil, err
	}
	return newStore(st), nil
}

// EtcdOptions are the TLS files of an etcd store ("" for none).
type EtcdOptions struct {
	CAFile, CertFile, KeyFile string
}

// OpenEtcdStore connects to etcd (endpoints of one cluster), keys under
// prefix, each request bounded by timeoutMs.
func OpenEtcdStore(endpoints []string, prefix string, timeoutMs uint64, o EtcdOptions) (*Store, error) {
	var s cstrs
	defer s.free()
	eps := C.malloc(C.size_t(len(endpoints)+1) * C.size_t(unsafe.Sizeof((*C.char)(nil))))
	defer C.free(eps)
	list := unsafe.Slice((**C.char)(eps), len(endpoints)+1)
	for i, ep := range endpoints {
		list[i] = s.add(ep)
	}
	var opts C.cnet_etcd_options
	opts.ca_file = s.add(o.CAFile)
	opts.cert_file = s.add(o.CertFile)
	opts.key_file = s.add(o.KeyFile)
	var st *C.cnet_ipam_store
	var e *C.cnet_error
	rc := C.cnet_ipam_store_open_etcd_with((**C.char)(eps), C.size_t(len(endpoints)), s.add(prefix),
		C.uint64_t(timeoutMs), &opts, &st, &e)
	if err := check(rc, e); err != nil {
		return nil, err
	}
	return newStore(st), nil
}

func newStore(p *C.cnet_ipam_store) *Store {
	st := &Store{p}
	runtime.SetFinalizer(st, (*Store).Close)
	return st
}

// Close releases the store (pools made from it stay usable).
func (st *Store) Close() {
	if st.p != nil {
		C.cnet_ipam_store_free(st.p)
		st.p = nil
	}
	runtime.SetFinalizer(st, nil)
}

// PoolConfig is the node subnet a pool hands addresses from; the range
// and gateway may be "".
type PoolConfig struct {
	Subnet, RangeStart, RangeEnd, Gateway string
}

// Pool opens the pool of cfg.Subnet in the store.
func (st *Store) Pool(cfg PoolConfig) (*Pool, error) {
	var s cstrs
	defer s.free()
	var pc C.cnet_pool_config
	pc.subnet = s.add(cfg.Subnet)
	pc.range_start = s.add(cfg.RangeStart)
	pc.range_end = s.add(cfg.RangeEnd)
	pc.gateway = s.add(cfg.Gateway)
	var p *C.cnet_pool
	var e *C.cnet_error
	rc := C.cnet_ipam_store_pool(st.p, &pc, &p, &e)
	runtime.KeepAlive(st)
	if err := check(rc, e); err != nil {
		return nil, err
	}
	pool := &Pool{nil, p}
	runtime.SetFinalizer(pool, (*Pool).Close)
	return pool, nil
}

// LeaseNodeSubnet leases a node subnet of network (prefix length
// subnetLen, 0: the default) to node for ttlSecs (the one it holds
// already, if any) and returns it ("10.244.1.0/24").
func (st *Store) LeaseNodeSubnet(network string, subnetLen uint8, node string, ttlSecs uint64) (string, error) {
	var s cstrs
	defer s.free()
	var sc C.cnet_subnet_config
	sc.network = s.add(network)
	sc.subnet_len = C.uint8_t(subnetLen)
	var l *C.cnet_leases
	var e *C.cnet_error
	rc := C.cnet_ipam_store_leases(st.p, &sc, &l, &e)
	runtime.KeepAlive(st)
	if err := check(rc, e); err != nil {
		return "", err
	}
	defer C.cnet_leases_free(l)
	var lease *C.cnet_lease
	if err := check(C.cnet_leases_acquire(l, s.add(node), nil, C.uint64_t(ttlSecs), &lease, &e), e); err != nil {
		return "", err
	}
	defer C.cnet_lease_free(lease)
	return C.GoString(&lease.subnet[0]), nil
}

// Alloc is one allocation of a pool.
type Alloc struct {
	Addr, CIDR, ContainerID, Ifname string
	Generation                      uint64
}

func allocsOf(l *C.cnet_alloc_array) []Alloc {
	if l == nil {
		return nil
	}
	items := unsafe.Slice(l.items, int(l.len))
	out := make([]Alloc, 0, len(items))
	for _, a := range items {
		out = append(out, Alloc{
			Addr:        C.GoString(&a.addr[0]),
			CIDR:        C.GoString(&a.cidr[0]),
			ContainerID: C.GoString(a.container_id),
			Ifname:      C.GoString(a.ifname),
			Generation:  uint64(a.generation),
		})
	}
	return out
}

// List returns every allocation of the pool.
func (p *Pool) List() ([]Alloc, error) {
	var l *C.cnet_alloc_array
	var e *C.cnet_error
	rc := C.cnet_pool_list(p.p, &l, &e)
	runtime.KeepAlive(p)
	if err := check(rc, e); err != nil {
		return nil, err
	}
	defer C.cnet_alloc_array_free(l)
	return allocsOf(l), nil
}

// GC releases every allocation whose container is not in alive; returns
// what it released.
func (p *Pool) GC(alive []string) ([]Alloc, error) {
	var s cstrs
	defer s.free()
	n := len(alive)
	arr := C.malloc(C.size_t(n+1) * C.size_t(unsafe.Sizeof((*C.char)(nil))))
	defer C.free(arr)
	list := unsafe.Slice((**C.char)(arr), n+1)
	for i, id := range alive {
		list[i] = C.CString(id)
		s = append(s, list[i])
	}
	var l *C.cnet_alloc_array
	var e *C.cnet_error
	rc := C.cnet_pool_gc(p.p, (**C.char)(arr), C.size_t(n), &l, &e)
	runtime.KeepAlive(p)
	if err := check(rc, e); err != nil {
		return nil, err
	}
	defer C.cnet_alloc_array_free(l)
	return allocsOf(l), nil
}
