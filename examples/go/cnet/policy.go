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

// Rule actions (Rule.Action; 0 is RuleLookup).
const (
	RuleLookup      = uint32(C.CNET_RULE_LOOKUP)
	RuleGoto        = uint32(C.CNET_RULE_GOTO)
	RuleNop         = uint32(C.CNET_RULE_NOP)
	RuleBlackhole   = uint32(C.CNET_RULE_BLACKHOLE)
	RuleUnreachable = uint32(C.CNET_RULE_UNREACHABLE)
	RuleProhibit    = uint32(C.CNET_RULE_PROHIBIT)
)

// Rule is a policy routing rule (`ip rule`); zero fields are unset. The
// family follows From / To (IPv4 when neither is set).
type Rule struct {
	Priority     uint32
	From, To     string // prefixes, "" for all
	Iif, Oif     string
	Fwmark       uint32
	Action       uint32 // RuleLookup (0), RuleBlackhole, …
	Table        uint32 // RuleLookup: the table (0: main)
	GotoPriority uint32 // RuleGoto
	Protocol     uint8  // 0: cnet's (119)
}

func (r Rule) c(s *cstrs) C.cnet_rule {
	var c C.cnet_rule
	c.priority = C.uint32_t(r.Priority)
	c.from = s.add(r.From)
	c.to = s.add(r.To)
	c.iif = s.add(r.Iif)
	c.oif = s.add(r.Oif)
	c.fwmark = C.uint32_t(r.Fwmark)
	c.action = C.cnet_rule_action(r.Action)
	c.table = C.uint32_t(r.Table)
	c.goto_priority = C.uint32_t(r.GotoPriority)
	c.protocol = C.uint8_t(r.Protocol)
	return c
}

// RuleAdd is `ip rule add …`.
func (h *Handle) RuleAdd(r Rule) error {
	var s cstrs
	defer s.free()
	c := r.c(&s)
	var e *C.cnet_error
	rc := C.cnet_rule_add(h.p, &c, &e)
	runtime.KeepAlive(h)
	return check(rc, e)
}

// RuleDelete is `ip rule del …`; a rule already gone is not an error.
func (h *Handle) RuleDelete(r Rule) error {
	var s cstrs
	defer s.free()
	c := r.c(&s)
	var e *C.cnet_error
	rc := C.cnet_rule_delete_if_exists(h.p, &c, nil, &e)
	runtime.KeepAlive(h)
	return check(rc, e)
}

// RuleList is `ip rule show` (both families, IPv4 first).
func (h *Handle) RuleList() ([]Rule, error) {
	var list *C.cnet_rule_array
	var e *C.cnet_error
	rc := C.cnet_rule_list(h.p, 0, &list, &e)
	runtime.KeepAlive(h)
	if err := check(rc, e); err != nil {
		return nil, err
	}
	defer C.cnet_rule_array_free(list)
	var out []Rule
	for _, it := range unsafe.Slice(list.items, int(list.len)) {
		out = append(out, Rule{
			Priority:     uint32(it.priority),
			From:         C.GoString(&it.from[0]),
			To:           C.GoString(&it.to[0]),
			Iif:          C.GoString(&it.iif[0]),
			Oif:          C.GoString(&it.oif[0]),
			Fwmark:       uint32(it.fwmark),
			Action:       uint32(it.action),
			Table:        uint32(it.table),
			GotoPriority: uint32(it.goto_priority),
			Protocol:     uint8(it.protocol),
		})
	}
	return out, nil
}

// RuleReconcile makes the rules of protocol (0: cnet's) exactly rules
// (each with a priority); it returns added, replaced, deleted.
func (h *Handle) RuleReconcile(protocol uint8, rules []Rule) (added, replaced, deleted int, err error) {
	var s cstrs
	defer s.free()
	n := len(rules)
	cs := (*C.cnet_rule)(C.calloc(C.size_t(n+1), C.size_t(unsafe.Sizeof(C.cnet_rule{}))))
	defer C.free(unsafe.Pointer(cs))
	arr := unsafe.Slice(cs, n+1)
	for i, r := range rules {
		arr[i] = r.c(&s)
	}
	var counts C.cnet_reconcile_counts
	var e *C.cnet_error
	rc := C.cnet_rule_reconcile(h.p, C.uint8_t(protocol), 0, cs, C.size_t(n), &counts, &e)
	runtime.KeepAlive(h)
	if err := check(rc, e); err != nil {
		return 0, 0, 0, err
	}
	return int(counts.added), int(counts.replaced), int(counts.deleted), nil
}

// Nexthop is a nexthop object (`ip nexthop`): a gateway and/or device,
// or a group of other nexthops (Group as id → weight).
type Nexthop struct {
	ID    uint32
	Via   string
	Dev   string
	Group map[uint32]uint16
}

func (h *Handle) nexthopSet(n Nexthop, replace bool) error {
	var s cstrs
	defer s.free()
	var c C.cnet_nexthop
	c.id = C.uint32_t(n.ID)
	c.via = s.add(n.Via)
	c.dev = s.add(n.Dev)
	var members *C.cnet_nexthop_group_member
	if len(n.Group) > 0 {
		members = (*C.cnet_nexthop_group_member)(C.calloc(C.size_t(len(n.Group)), C.size_t(unsafe.Sizeof(C.cnet_nexthop_group_member{}))))
		defer C.free(unsafe.Pointer(members))
		m := unsafe.Slice(members, len(n.Group))
		i := 0
		for id, w := range n.Group {
			m[i].id = C.uint32_t(id)
			m[i].weight = C.uint16_t(w)
			i++
		}
		c.kind = C.CNET_NEXTHOP_GROUP
		c.group = members
		c.group_len = C.size_t(len(n.Group))
	}
	var e *C.cnet_error
	var rc C.cnet_result
	if replace {
		rc = C.cnet_nexthop_replace(h.p, &c, &e)
	} else {
		rc = C.cnet_nexthop_add(h.p, &c, &e)
	}
	runtime.KeepAlive(h)
	return check(rc, e)
}

// NexthopAdd is `ip nexthop add …`.
func (h *Handle) NexthopAdd(n Nexthop) error { return h.nexthopSet(n, false) }

// NexthopReplace is `ip nexthop replace …`.
func (h *Handle) NexthopReplace(n Nexthop) error { return h.nexthopSet(n, true) }

// NexthopDelete is `ip nexthop del id ID`; a nexthop already gone is not
// an error (the kernel deletes the routes using it).
func (h *Handle) NexthopDelete(id uint32) error {
	var e *C.cnet_error
	rc := C.cnet_nexthop_delete_if_exists(h.p, C.uint32_t(id), nil, &e)
	runtime.KeepAlive(h)
	return check(rc, e)
}

// NexthopList is `ip nexthop show`, by id (Dev empty: listed by index only).
func (h *Handle) NexthopList() ([]Nexthop, error) {
	var list *C.cnet_nexthop_array
	var e *C.cnet_error
	rc := C.cnet_nexthop_list(h.p, nil, &list, &e)
	runtime.KeepAlive(h)
	if err := check(rc, e); err != nil {
		return nil, err
	}
	defer C.cnet_nexthop_array_free(list)
	var out []Nexthop
	for _, it := range unsafe.Slice(list.items, int(list.len)) {
		n := Nexthop{ID: uint32(it.id), Via: C.GoString(&it.gateway[0])}
		if it.group_len > 0 {
			n.Group = map[uint32]uint16{}
			for _, m := range unsafe.Slice(it.group, int(it.group_len)) {
				n.Group[uint32(m.id)] = uint16(m.weight)
			}
		}
		out = append(out, n)
	}
	return out, nil
}

// RouteAddNexthop is `ip route add dst nhid id`.
func (h *Handle) RouteAddNexthop(dst string, id uint32) error {
	var s cstrs
	defer s.free()
	var r C.cnet_route
	r.dst = s.add(dst)
	r.nhid = C.uint32_t(id)
	var e *C.cnet_error
	rc := C.cnet_route_add(h.p, &r, &e)
	runtime.KeepAlive(h)
	return check(rc, e)
}
