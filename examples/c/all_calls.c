/* Calls every function of cnet.h at least once (scripts/test-examples
 * checks that the header has no function this file, bridge.c or the Rust
 * ABI tests leave out), in a throwaway namespace cn-exa-PID, checking each
 * result code. Run as root: ./all_calls IPAM-DIR */
#include <cnet.h>
#include <sys/socket.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static int fails;
static void expect(const char *what, cnet_result rc, cnet_result want, cnet_error *err) {
    if (rc != want) {
        fprintf(stderr, "all_calls: %s: %s, want %s: %s\n", what, cnet_result_name(rc),
                cnet_result_name(want), err ? cnet_error_message(err) : "");
        fails++;
    }
    cnet_error_free(err);
}
#define OK(call) IS(CNET_OK, call)
#define IS(want, call) do { cnet_error *e_ = NULL; cnet_result r_ = (call); expect(#call, r_, want, e_); } while (0)
#define E &e_
/* Calls that need a link kind this kernel may lack (wireguard, ipvlan,
 * vlan, dummy): CNET_OK where it has it, CNET_UNSUPPORTED where not. */
#define OK_OR_UNSUPPORTED(call) do { cnet_error *e_ = NULL; cnet_result r_ = (call); \
    expect(#call, r_, r_ == CNET_UNSUPPORTED ? CNET_UNSUPPORTED : CNET_OK, e_); } while (0)

int main(int argc, char **argv) {
    char name[64], path[128];
    cnet_netns *ns = NULL, *ns2 = NULL, *ns3 = NULL;
    cnet_handle *h = NULL;
    snprintf(name, sizeof name, "cn-exa-%d", (int)getpid());
    OK(cnet_netns_create(name, &ns, E));
    OK(cnet_handle_new(ns, &h, E));
    OK(cnet_handle_netns(h, &ns2, E));
    snprintf(path, sizeof path, "/run/netns/%s", name);
    OK(cnet_netns_open_path(path, &ns3, E));
    cnet_netns_free(ns3); ns3 = NULL;
    OK(cnet_netns_open_pid((uint32_t)getpid(), &ns3, E));
    cnet_netns_free(ns3); ns3 = NULL;
    OK(cnet_netns_open(name, &ns3, E));

    cnet_link_config br = {0}, vx = {0};
    br.kind = CNET_LINK_BRIDGE; br.name = "br0"; br.up = true;
    OK(cnet_link_add(h, &br, E));
    cnet_link_config veth = {0};
    veth.kind = CNET_LINK_VETH; veth.name = "va"; veth.peer_name = "vb";
    OK(cnet_link_add(h, &veth, E));
    OK(cnet_link_set_mtu(h, "va", 1400, E));
    OK(cnet_link_set_master(h, "va", "br0", E));
    OK(cnet_link_set_master(h, "va", NULL, E));
    OK(cnet_link_set_up(h, "va", E));
    OK(cnet_link_set_down(h, "va", E));
    cnet_link l;
    OK(cnet_link_get(h, "va", &l, E));
    if (l.mtu != 1400 || l.kind != CNET_LINK_VETH) fprintf(stderr, "all_calls: link get\n"), fails++;
    OK(cnet_addr_add(h, "br0", "192.0.2.1/24", E));
    OK(cnet_addr_replace(h, "br0", "192.0.2.1/24", E));
    cnet_addr_array *addrs = NULL;
    OK(cnet_addr_list(h, "br0", &addrs, E));
    if (!addrs || addrs->len < 1 || strcmp(addrs->items[0].local, "192.0.2.1/24")) fprintf(stderr, "all_calls: addr list\n"), fails++;
    cnet_addr_array_free(addrs);

    cnet_route r = {0};
    r.dst = "198.51.100.0/24"; r.via = "192.0.2.2";
    OK(cnet_route_add(h, &r, E));
    r.metric = 0; OK(cnet_route_replace(h, &r, E));
    cnet_route_array *routes = NULL;
    cnet_route_filter f = {0};
    f.protocol = CNET_ROUTE_PROTOCOL;
    OK(cnet_route_list(h, &f, &routes, E));
    if (!routes || routes->len != 1) fprintf(stderr, "all_calls: route list\n"), fails++;
    cnet_route_array_free(routes);
    OK(cnet_route_delete(h, &r, E));
    bool gone = true;
    OK(cnet_route_delete_if_exists(h, &r, &gone, E));
    if (gone) fprintf(stderr, "all_calls: route already deleted\n"), fails++;
    cnet_reconcile_counts counts;
    cnet_route want[2] = {{0}, {0}};
    want[0].dst = "203.0.113.0/25"; want[0].via = "192.0.2.3";
    want[1].dst = "203.0.113.128/25"; want[1].via = "192.0.2.3";
    OK(cnet_route_reconcile(h, 0, 0, NULL, want, 2, &counts, E));
    if (counts.added != 2) fprintf(stderr, "all_calls: reconcile added %zu\n", counts.added), fails++;
    /* Before the node below: it owns every protocol-119 route of the table. */
    cnet_route_lookup_result lr;
    OK(cnet_route_lookup(h, "203.0.113.7", NULL, &lr, E));
    cnet_route_op ops[1] = {{0}};
    ops[0].op = CNET_ROUTE_DELETE; ops[0].route = want[0];
    cnet_result codes[1];
    OK(cnet_route_batch(h, ops, 1, codes, E));

    /* Policy routing rules: add, list, reconcile, delete. */
    cnet_rule rule = {0};
    rule.priority = 100; rule.from = "10.244.1.0/24"; rule.table = 100;
    OK(cnet_rule_add(h, &rule, E));
    cnet_rule_array *rules = NULL;
    OK(cnet_rule_list(h, AF_INET, &rules, E));
    int seen = 0;
    for (size_t i = 0; rules && i < rules->len; i++)
        seen += rules->items[i].priority == 100 && rules->items[i].table == 100 && !strcmp(rules->items[i].from, "10.244.1.0/24");
    if (seen != 1) fprintf(stderr, "all_calls: rule list\n"), fails++;
    cnet_rule_array_free(rules);
    cnet_rule rwant[2] = {{0}, {0}};
    rwant[0] = rule;
    rwant[1].priority = 200; rwant[1].fwmark = 0x10; rwant[1].action = CNET_RULE_BLACKHOLE;
    OK(cnet_rule_reconcile(h, 0, AF_INET, rwant, 2, &counts, E));
    if (counts.added != 1 || counts.unchanged != 1) fprintf(stderr, "all_calls: rule reconcile\n"), fails++;
    OK(cnet_rule_delete(h, &rwant[1], E));
    OK(cnet_rule_delete_if_exists(h, &rule, &gone, E));
    if (!gone) fprintf(stderr, "all_calls: rule delete_if_exists\n"), fails++;

    /* Nexthop objects and a route using one (a nexthop's device needs a
     * carrier: the veth pair, both ends up). */
    OK(cnet_link_set_up(h, "lo", E));
    OK(cnet_link_set_up(h, "va", E));
    OK(cnet_link_set_up(h, "vb", E));
    cnet_nexthop nh = {0};
    nh.id = 1; nh.via = "192.0.2.2"; nh.dev = "va"; nh.onlink = true;
    OK(cnet_nexthop_add(h, &nh, E));
    nh.via = "192.0.2.4";
    OK(cnet_nexthop_replace(h, &nh, E));
    cnet_nexthop_group_member mem[1] = {{1, 1}};
    cnet_nexthop grp = {0};
    grp.id = 10; grp.kind = CNET_NEXTHOP_GROUP; grp.group = mem; grp.group_len = 1;
    OK(cnet_nexthop_add(h, &grp, E));
    cnet_nexthop_entry *nhe = NULL;
    OK(cnet_nexthop_get(h, 10, &nhe, E));
    if (!nhe || nhe->group_len != 1 || nhe->group[0].id != 1) fprintf(stderr, "all_calls: nexthop get\n"), fails++;
    cnet_nexthop_entry_free(nhe);
    cnet_nexthop_array *nhs = NULL;
    OK(cnet_nexthop_list(h, NULL, &nhs, E));
    if (!nhs || nhs->len != 2 || strcmp(nhs->items[0].gateway, "192.0.2.4")) fprintf(stderr, "all_calls: nexthop list\n"), fails++;
    cnet_nexthop_array_free(nhs);
    cnet_route nr = {0};
    nr.dst = "10.244.7.0/24"; nr.nhid = 10;
    OK(cnet_route_add(h, &nr, E));
    OK(cnet_route_list(h, &f, &routes, E));
    int nhid_seen = 0;
    for (size_t i = 0; routes && i < routes->len; i++) nhid_seen += routes->items[i].nhid == 10;
    if (nhid_seen != 1) fprintf(stderr, "all_calls: route nhid\n"), fails++;
    cnet_route_array_free(routes);
    OK(cnet_nexthop_delete(h, 10, E)); /* the kernel deletes the route too */
    OK(cnet_nexthop_delete_if_exists(h, 1, &gone, E));
    if (!gone) fprintf(stderr, "all_calls: nexthop delete_if_exists\n"), fails++;

    /* The newer link kinds: macvlan everywhere; wireguard, ipvlan, vlan and
     * dummy where the kernel has them. Counters come with every link. */
    cnet_link_config mv = {0};
    mv.kind = CNET_LINK_MACVLAN; mv.name = "mv0"; mv.dev = "va"; mv.macvlan_mode = CNET_MACVLAN_BRIDGE; mv.up = true;
    OK(cnet_link_add(h, &mv, E));
    cnet_link mvl;
    OK(cnet_link_get(h, "mv0", &mvl, E));
    if (mvl.kind != CNET_LINK_MACVLAN || !mvl.has_stats) fprintf(stderr, "all_calls: macvlan\n"), fails++;
    OK(cnet_link_delete(h, "mv0", E));
    cnet_link_config more[4] = {{0}, {0}, {0}, {0}};
    more[0].kind = CNET_LINK_WIREGUARD; more[0].name = "wg0"; more[0].mtu = 1420;
    more[1].kind = CNET_LINK_IPVLAN; more[1].name = "iv0"; more[1].dev = "va"; more[1].ipvlan_mode = CNET_IPVLAN_L2;
    more[2].kind = CNET_LINK_VLAN; more[2].name = "va.10"; more[2].dev = "va"; more[2].vlan_id = 10; more[2].vlan_protocol = CNET_VLAN_8021Q;
    more[3].kind = CNET_LINK_DUMMY; more[3].name = "dm0";
    for (int i = 0; i < 4; i++) {
        OK_OR_UNSUPPORTED(cnet_link_add(h, &more[i], E));
        OK(cnet_link_delete_if_exists(h, more[i].name, NULL, E));
    }

    vx.kind = CNET_LINK_VXLAN; vx.name = "vx0"; vx.vni = 42; vx.dev = "br0"; vx.local = "192.0.2.1"; vx.nolearning = true; vx.up = true;
    cnet_link vxl;
    OK(cnet_link_ensure(h, &vx, &vxl, E));
    cnet_neigh n = {0};
    n.dev = "vx0"; n.ip = "10.244.2.0"; n.mac = "02:00:00:00:00:02";
    OK(cnet_neigh_add(h, &n, E));
    OK(cnet_neigh_replace(h, &n, E));
    OK(cnet_neigh_delete(h, &n, E));
    OK(cnet_neigh_reconcile(h, "vx0", &n, 1, &counts, E));
    cnet_neigh_array *neighs = NULL;
    OK(cnet_neigh_list(h, "vx0", &neighs, E));
    cnet_neigh_array_free(neighs);
    cnet_fdb fd = {0};
    fd.mac = "02:00:00:00:00:02"; fd.dev = "vx0"; fd.dst = "192.0.2.9";
    OK(cnet_fdb_add(h, &fd, E));
    OK(cnet_fdb_replace(h, &fd, E));
    OK(cnet_fdb_delete(h, &fd, E));
    OK(cnet_fdb_append(h, &fd, E));
    OK(cnet_fdb_reconcile(h, "vx0", &fd, 1, &counts, E));
    cnet_fdb_array *fdb = NULL;
    OK(cnet_fdb_list(h, "vx0", &fdb, E));
    cnet_fdb_array_free(fdb);

    cnet_ipam_store *store = NULL;
    OK(cnet_ipam_store_open_file(argc > 1 ? argv[1] : "/tmp/cnet-all-calls-ipam", &store, E));
    cnet_subnet_config sc = {0};
    sc.network = "10.244.0.0/16";
    cnet_leases *leases = NULL;
    OK(cnet_ipam_store_leases(store, &sc, &leases, E));
    cnet_node_attrs at = {0};
    at.underlay_ip = "192.0.2.9"; at.backend = "host-gw";
    cnet_lease *lease = NULL;
    OK(cnet_leases_acquire(leases, "peer-a", &at, 3600, &lease, E));
    cnet_lease_free(lease); lease = NULL;
    OK(cnet_leases_renew(leases, "peer-a", 3600, &lease, E));
    cnet_lease_free(lease);
    cnet_lease_array *la = NULL;
    OK(cnet_leases_list(leases, &la, E));
    cnet_lease_array_free(la);
    cnet_node_config nc = {0};
    nc.name = "me"; nc.subnet = "10.244.9.0/24"; nc.underlay_dev = "br0"; nc.underlay_ip = "192.0.2.1";
    cnet_node *node = NULL;
    OK(cnet_node_new(h, &nc, &node, E));
    cnet_backend be = {0};
    be.kind = CNET_BACKEND_HOST_GW;
    cnet_peer_report *rep = NULL;
    OK(cnet_node_reconcile_leases(node, &be, leases, &rep, E));
    if (!rep || rep->direct != 1) fprintf(stderr, "all_calls: node direct\n"), fails++;
    cnet_peer_report_free(rep); rep = NULL;
    /* The leases one change at a time (poll the fd beside your others),
     * each applied to the node one peer at a time. */
    cnet_lease_watch *lw = NULL;
    OK(cnet_leases_watch(leases, &lw, E));
    if (cnet_lease_watch_fd(lw) < 0 || cnet_lease_watch_fd(NULL) != -1)
        fprintf(stderr, "all_calls: lease watch fd\n"), fails++;
    cnet_lease_event ev;
    OK(cnet_lease_watch_next(lw, 1000, &ev, E));
    if (ev.kind != CNET_LEASE_EVENT_ALL || !ev.leases || ev.leases->len != 1)
        fprintf(stderr, "all_calls: lease watch all\n"), fails++;
    cnet_lease_array_free(ev.leases);
    cnet_node_attrs at2 = at;
    at2.underlay_ip = "192.0.2.11";
    cnet_lease *lc = NULL;
    OK(cnet_leases_acquire(leases, "peer-c", &at2, 3600, &lc, E));
    OK(cnet_lease_watch_next(lw, 5000, &ev, E));
    if (ev.kind != CNET_LEASE_EVENT_PUT || !ev.leases || ev.leases->len != 1) {
        fprintf(stderr, "all_calls: lease watch put\n"), fails++;
    } else {
        OK(cnet_node_put_lease(node, &ev.leases->items[0], &rep, E));
        if (!rep || rep->direct != 1) fprintf(stderr, "all_calls: put lease\n"), fails++;
        cnet_peer_report_free(rep); rep = NULL;
    }
    cnet_lease_array_free(ev.leases);
    OK(cnet_leases_release(leases, "peer-c", E));
    OK(cnet_lease_watch_next(lw, 5000, &ev, E));
    if (ev.kind != CNET_LEASE_EVENT_GONE || strcmp(ev.subnet, lc->subnet))
        fprintf(stderr, "all_calls: lease watch gone\n"), fails++;
    OK(cnet_node_remove_subnet(node, lc->subnet, &rep, E));
    if (!rep || rep->routes.deleted != 1) fprintf(stderr, "all_calls: remove subnet\n"), fails++;
    cnet_peer_report_free(rep); rep = NULL;
    cnet_lease_free(lc);
    cnet_lease_watch_free(lw);
    cnet_peer peer = {0};
    peer.name = "peer-b"; peer.subnet = "10.244.3.0/24"; peer.underlay = "192.0.2.10";
    OK(cnet_node_reconcile_peers(node, &be, &peer, 1, NULL, E));
    /* A peer host-gw cannot reach (its underlay is behind a router, on
     * another segment): CNET_PARTIAL, the other peer programmed, and the
     * report says which is which. The router's route is static (protocol
     * 4), not the node's. */
    cnet_route gw = {0};
    gw.dst = "198.51.100.0/24"; gw.via = "192.0.2.254"; gw.protocol = 4;
    OK(cnet_route_add(h, &gw, E));
    cnet_peer two[2] = {peer, peer};
    two[1].name = "far"; two[1].subnet = "10.244.4.0/24"; two[1].underlay = "198.51.100.7";
    IS(CNET_PARTIAL, cnet_node_reconcile_peers(node, &be, two, 2, &rep, E));
    if (!rep || rep->outcomes_len != 2 || rep->failed != 1 || rep->direct != 1
        || rep->outcomes[0].code != CNET_OK || rep->outcomes[0].path != CNET_PEER_DIRECT
        || strcmp(rep->outcomes[1].name, "far") || rep->outcomes[1].path != CNET_PEER_FAILED
        || rep->outcomes[1].code != CNET_CONFLICT || !rep->outcomes[1].message)
        fprintf(stderr, "all_calls: partial peer report\n"), fails++;
    cnet_peer_report_free(rep); rep = NULL;
    /* WireGuard: the node's key lives in a file of ours (made on first use). */
    char keyfile[256], pub[64];
    snprintf(keyfile, sizeof keyfile, "%s.wg.key", argc > 1 ? argv[1] : "/tmp/cnet-all-calls-ipam");
    cnet_backend wg = {0};
    wg.kind = CNET_BACKEND_WIREGUARD; wg.key_file = keyfile; wg.keepalive = 25;
    OK(cnet_node_wireguard_public_key(node, &wg, pub, sizeof pub, E));
    if (strlen(pub) != 44) fprintf(stderr, "all_calls: wireguard key %s\n", pub), fails++;
    cnet_peer wpeer = peer;
    wpeer.wireguard_key = pub; /* any valid key will do for the call */
    OK_OR_UNSUPPORTED(cnet_node_reconcile_peers(node, &wg, &wpeer, 1, &rep, E));
    cnet_peer_report_free(rep); rep = NULL;
    OK(cnet_node_teardown(node, &rep, E));
    if (!rep || rep->failed != 0) fprintf(stderr, "all_calls: teardown report\n"), fails++;
    cnet_peer_report_free(rep);
    unlink(keyfile);
    OK(cnet_leases_release(leases, "peer-a", E));
    cnet_pool_config pc = {0};
    pc.subnet = "10.244.9.0/24";
    cnet_pool *pool = NULL;
    OK(cnet_ipam_store_pool(store, &pc, &pool, E));
    cnet_alloc *a = NULL;
    OK(cnet_pool_allocate(pool, "dead", "eth0", &a, E));
    cnet_alloc_free(a);
    cnet_alloc_array *all = NULL, *gc = NULL;
    OK(cnet_pool_list(pool, &all, E));
    if (!all || all->len != 1) fprintf(stderr, "all_calls: pool list\n"), fails++;
    cnet_alloc_array_free(all);
    const char *alive[] = {"alive"};
    OK(cnet_pool_gc(pool, alive, 1, &gc, E));
    if (!gc || gc->len != 1 || strcmp(gc->items[0].container_id, "dead")) fprintf(stderr, "all_calls: gc\n"), fails++;
    cnet_alloc_array_free(gc);
    OK(cnet_pool_release(pool, "dead", "eth0", NULL, E));

    /* The bridge network on the pool: a container namespace given open. */
    char cname[80];
    snprintf(cname, sizeof cname, "%s-c", name);
    cnet_netns *cns = NULL;
    OK(cnet_netns_create(cname, &cns, E));
    cnet_bridge_config bc = {0};
    bc.name = "cnb0";
    cnet_bridge_network *bn = NULL;
    OK(cnet_bridge_network_ensure(h, pool, &bc, &bn, E));
    cnet_container_ns cn = {0};
    cn.kind = CNET_CONTAINER_NS_NETNS; cn.netns = cns;
    cnet_attachment *att = NULL;
    char *cni = NULL;
    OK(cnet_bridge_network_attach(bn, &cn, "ctr", "eth0", &att, &cni, E));
    if (!att || !cni || !strstr(cni, att->address)) fprintf(stderr, "all_calls: attach\n"), fails++;
    cnet_drift_array *drift = NULL;
    OK(cnet_bridge_network_check(bn, &cn, "ctr", "eth0", &drift, E));
    if (!drift || drift->len) fprintf(stderr, "all_calls: check\n"), fails++;
    cnet_drift_array_free(drift);
    /* ipMasq: the network's masquerade rule made, kept, removed. */
    bool masq_changed = false;
    OK(cnet_bridge_network_masquerade(bn, "10.244.0.0/16", true, &masq_changed, E));
    if (!masq_changed) fprintf(stderr, "all_calls: masquerade\n"), fails++;
    OK(cnet_bridge_network_masquerade(bn, NULL, false, &masq_changed, E));
    if (!masq_changed) fprintf(stderr, "all_calls: unmasquerade\n"), fails++;
    /* The network as it is (CNI DEL/GC/CHECK): nothing created. */
    cnet_bridge_network *bn_open = NULL;
    OK(cnet_bridge_network_open(h, pool, &bc, &bn_open, E));
    cnet_drift_array *drift_open = NULL;
    OK(cnet_bridge_network_check(bn_open, &cn, "ctr", "eth0", &drift_open, E));
    if (!drift_open || drift_open->len) fprintf(stderr, "all_calls: open + check\n"), fails++;
    cnet_drift_array_free(drift_open);
    cnet_bridge_network_free(bn_open);
    cnet_detach_report *rep2 = NULL;
    OK(cnet_bridge_network_detach(bn, NULL, "ctr", "eth0", &rep2, E));
    if (!rep2 || !rep2->link_removed || !rep2->released) fprintf(stderr, "all_calls: detach\n"), fails++;
    cnet_detach_report_free(rep2);
    cnet_attachment_free(att);
    cnet_string_free(cni);
    /* Attach again asking for an address and a MAC (CNI IP= and mac). */
    cnet_attach_options ao = {0};
    ao.ip = "10.244.9.77"; ao.mac = "02:00:00:00:00:77";
    cnet_attachment *att2 = NULL;
    OK(cnet_bridge_network_attach_with(bn, &cn, "ctr", "eth0", &ao, &att2, NULL, E));
    if (!att2 || strcmp(att2->ip, "10.244.9.77") || att2->container.mac[5] != 0x77)
        fprintf(stderr, "all_calls: attach_with\n"), fails++;
    cnet_attachment_free(att2);
    OK(cnet_bridge_network_detach(bn, NULL, "ctr", "eth0", NULL, E));
    cnet_bridge_network_free(bn);
    cnet_netns_free(cns);
    OK(cnet_netns_delete(cname, NULL, E));
    const char *eps[] = {"http://127.0.0.1:9"};
    cnet_ipam_store *etcd = NULL;
    cnet_error *ee = NULL;
    if (cnet_ipam_store_open_etcd(eps, 1, "/cnet", 200, &etcd, &ee) == CNET_OK) cnet_ipam_store_free(etcd);
    cnet_error_free(ee);
    /* TLS and auth options: every field may be NULL; nothing listens here. */
    cnet_etcd_options eo = {.ca_file = NULL, .cert_file = NULL, .key_file = NULL,
                            .username = "cnet", .password = "not-shown"};
    ee = NULL;
    if (cnet_ipam_store_open_etcd_with(eps, 1, "/cnet", 200, &eo, &etcd, &ee) == CNET_OK)
        cnet_ipam_store_free(etcd);
    cnet_error_free(ee);

    /* aws-vpc: credentials and the metadata service from the environment
     * (kept on this machine: nothing listens on 127.0.0.1:9). */
    setenv("AWS_ACCESS_KEY_ID", "AKIDALLCALLS", 1);
    setenv("AWS_SECRET_ACCESS_KEY", "not-shown", 1);
    setenv("AWS_EC2_METADATA_SERVICE_ENDPOINT", "http://127.0.0.1:9", 1);
    cnet_aws_vpc_config vc = {.cluster = "10.244.0.0/16", .instance_id = "i-0123456789abcdef0",
                              .endpoint = "http://127.0.0.1:9", .region = "us-east-1"};
    cnet_aws_vpc *vpc = NULL;
    ee = NULL;
    if (cnet_aws_vpc_open(&vc, &vpc, &ee) == CNET_OK) cnet_aws_vpc_free(vpc);
    else if (!ee || strstr(cnet_error_message(ee), "not-shown"))
        fprintf(stderr, "all_calls: aws open error\n"), fails++;
    cnet_error_free(ee);
    cnet_vpc_counts vcounts;
    if (cnet_aws_vpc_prepare(NULL, NULL) != CNET_NULL_ARGUMENT
        || cnet_aws_vpc_reconcile(NULL, NULL, &vcounts, NULL) != CNET_NULL_ARGUMENT
        || cnet_aws_vpc_reconcile_beyond(NULL, NULL, NULL, &vcounts, NULL) != CNET_NULL_ARGUMENT)
        fprintf(stderr, "all_calls: aws NULL\n"), fails++;
    cnet_aws_vpc_free(NULL);

    cnet_link_array *links = NULL;
    OK(cnet_link_list(h, &links, E));
    cnet_link_array_free(links);
    char *json = NULL;
    OK(cnet_trace(ns, "203.0.113.7", NULL, false, 0, &json, E));
    cnet_string_free(json);
    char label[256];
    OK(cnet_netns_label(ns3, label, sizeof label, E));
    OK(cnet_link_delete(h, "vx0", E));
    OK(cnet_link_delete_if_exists(h, "va", NULL, E));
    OK(cnet_addr_delete(h, "br0", "192.0.2.1/24", E));
    OK(cnet_addr_delete_if_exists(h, "br0", "192.0.2.1/24", NULL, E));
    cnet_error *err = NULL;
    IS(CNET_NOT_FOUND, cnet_link_delete(h, "nope", &err));
    (void)cnet_error_code(err);
    (void)cnet_error_errno(err);
    (void)cnet_error_kernel_message(err);
    cnet_error_free(err);
    printf("libcnet %s: %s\n", cnet_version(), cnet_netns_exists(name) ? "namespace exists" : "?");

    cnet_pool_free(pool);
    cnet_node_free(node);
    cnet_leases_free(leases);
    cnet_ipam_store_free(store);
    cnet_handle_free(h);
    cnet_netns_free(ns);
    cnet_netns_free(ns2);
    cnet_netns_free(ns3);
    OK(cnet_netns_delete(name, NULL, E));
    printf("all_calls: %s\n", fails ? "FAILED" : "every call as expected");
    return fails != 0;
}
