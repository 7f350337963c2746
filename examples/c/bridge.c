/* cnet from C: a bridge network in a throwaway "host" namespace, two
 * containers attached to it (one by name, one by path), a ping between
 * them (the trace's ICMP echo, proved by capture), a drift check, detach,
 * teardown.
 *
 *   host ns  [cnet0 10.244.1.1/24] ── veth ──▶ c1 ns eth0 10.244.1.x
 *                                  └─ veth ──▶ c2 ns eth0 10.244.1.y
 *
 * Every namespace is a throwaway one of this run (cn-exc-PID-*); nothing
 * touches the namespace the program runs in. Build:
 *   cc -Wall -Wextra -Werror bridge.c $(pkg-config --cflags --libs cnet)
 * Run as root: ./bridge [IPAM-DIR]
 */
#include <cnet.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static int failed(const char *what, cnet_result rc, cnet_error *err) {
    if (rc == CNET_OK) return 0;
    fprintf(stderr, "bridge: %s: %s (%s", what, err ? cnet_error_message(err) : "?",
            cnet_result_name(rc));
    if (err && cnet_error_errno(err)) fprintf(stderr, ", errno %d", cnet_error_errno(err));
    if (err && cnet_error_kernel_message(err)) fprintf(stderr, ", kernel: %s", cnet_error_kernel_message(err));
    fprintf(stderr, ")\n");
    cnet_error_free(err);
    return 1;
}
#define TRY(what, call) do { cnet_error *err_ = NULL; cnet_result rc_ = (call); \
    if (failed(what, rc_, err_)) goto out; } while (0)

struct container {
    char ns_name[64], ns_path[96], id[32];
    cnet_netns *ns;
    cnet_container_ns where;
    cnet_attachment *att;
};

int main(int argc, char **argv) {
    char host_name[64], dir[256];
    struct container c[2];
    cnet_netns *host_ns = NULL;
    cnet_handle *host = NULL, *h1 = NULL;
    cnet_ipam_store *store = NULL;
    cnet_pool *pool = NULL;
    cnet_bridge_network *net = NULL;
    cnet_drift_array *drifts = NULL;
    char *json = NULL, *trace = NULL;
    int status = 1;
    pid_t pid = getpid();

    printf("libcnet %s (header %s)\n", cnet_version(), CNET_VERSION);
    memset(c, 0, sizeof c);
    snprintf(host_name, sizeof host_name, "cn-exc-%d-h", (int)pid);
    snprintf(dir, sizeof dir, "%s", argc > 1 ? argv[1] : "/tmp/cnet-example-c-ipam");

    TRY("host namespace", cnet_netns_create(host_name, &host_ns, &err_));
    TRY("host handle", cnet_handle_new(host_ns, &host, &err_));
    TRY("ipam store", cnet_ipam_store_open_file(dir, &store, &err_));
    {
        cnet_pool_config pc = {0};
        pc.subnet = "10.244.1.0/24";
        TRY("pool", cnet_ipam_store_pool(store, &pc, &pool, &err_));
    }
    {
        cnet_bridge_config bc = {0};
        bc.name = "cnet0";
        bc.mtu = 1500;
        TRY("ensure bridge network", cnet_bridge_network_ensure(host, pool, &bc, &net, &err_));
    }
    for (int i = 0; i < 2; i++) {
        snprintf(c[i].ns_name, sizeof c[i].ns_name, "cn-exc-%d-c%d", (int)pid, i + 1);
        snprintf(c[i].ns_path, sizeof c[i].ns_path, "/run/netns/cn-exc-%d-c%d", (int)pid, i + 1);
        snprintf(c[i].id, sizeof c[i].id, "c%d-%d", i + 1, (int)pid);
        TRY("container namespace", cnet_netns_create(c[i].ns_name, &c[i].ns, &err_));
        /* c1 by name, c2 by path (what a runtime passes as CNI_NETNS). */
        c[i].where.kind = i == 0 ? CNET_CONTAINER_NS_NAME : CNET_CONTAINER_NS_PATH;
        c[i].where.name = c[i].ns_name;
        c[i].where.path = c[i].ns_path;
        TRY("attach", cnet_bridge_network_attach(net, &c[i].where, c[i].id, "eth0", &c[i].att,
                                                 i == 0 ? &json : NULL, &err_));
        printf("attached %s: %s on eth0 in %s (host end %s, gateway %s)\n", c[i].id,
               c[i].att->address, c[i].ns_name, c[i].att->host.name, c[i].att->gateway);
    }
    printf("CNI result of c1: %s\n", json);
    TRY("c1 handle", cnet_handle_new(c[0].ns, &h1, &err_));
    {
        cnet_route_lookup_result r;
        TRY("route get", cnet_route_lookup(h1, c[1].att->ip, NULL, &r, &err_));
        printf("c1 -> %s: dev %s via %s src %s\n", c[1].att->ip, r.dev,
               r.gateway[0] ? r.gateway : "(connected)", r.prefsrc);
    }
    /* The ping: the trace's ICMP echo from c1 to c2, watched on every hop. */
    TRY("trace", cnet_trace(c[0].ns, c[1].att->ip, NULL, true, 2000, &trace, &err_));
    if (!strstr(trace, "\"replied\":true")) {
        fprintf(stderr, "bridge: no echo reply from %s: %s\n", c[1].att->ip, trace);
        goto out;
    }
    printf("ping c1 -> c2 (%s): reply received\n", c[1].att->ip);
    TRY("check", cnet_bridge_network_check(net, &c[0].where, c[0].id, "eth0", &drifts, &err_));
    printf("check c1: %zu drift(s)\n", drifts->len);
    if (drifts->len) goto out;
    status = 0;
out:
    cnet_drift_array_free(drifts);
    cnet_string_free(trace);
    cnet_string_free(json);
    cnet_handle_free(h1);
    for (int i = 0; i < 2; i++) {
        if (net && c[i].ns) {
            cnet_detach_report *rep = NULL;
            cnet_error *err = NULL;
            cnet_result rc = cnet_bridge_network_detach(net, &c[i].where, c[i].id, "eth0", &rep, &err);
            if (failed("detach", rc, err)) status = 1;
            else printf("detached %s: link %s, address %s\n", c[i].id,
                        rep->link_removed ? "removed" : "already gone",
                        rep->released ? rep->released_ip : "(none held)");
            cnet_detach_report_free(rep);
        }
        cnet_attachment_free(c[i].att);
        cnet_netns_free(c[i].ns);
        cnet_netns_delete(c[i].ns_name, NULL, NULL);
    }
    cnet_bridge_network_free(net);
    cnet_pool_free(pool);
    cnet_ipam_store_free(store);
    cnet_handle_free(host);
    cnet_netns_free(host_ns);
    cnet_netns_delete(host_name, NULL, NULL);
    printf("torn down%s\n", status ? " (after a failure)" : "");
    return status;
}
