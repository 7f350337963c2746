/* cnet from C: two containers on a bridge network, a ping between them
 * (the trace's probe, proved by capture), then teardown.
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
    char ns_name[64], veth[16];
    cnet_netns *ns;
    cnet_handle *h;
    cnet_alloc *addr;
};

static int attach(cnet_handle *host, cnet_pool *pool, struct container *c, const char *id) {
    cnet_link_config veth = {0};
    cnet_route dflt = {0};
    int rc = 1;
    TRY("create namespace", cnet_netns_create(c->ns_name, &c->ns, &err_));
    TRY("handle", cnet_handle_new(c->ns, &c->h, &err_));
    veth.kind = CNET_LINK_VETH;
    veth.name = c->veth;
    veth.peer_name = "eth0";
    veth.peer_netns = c->ns;
    veth.master = "cnet0";
    veth.up = true;
    veth.peer_up = true;
    TRY("veth", cnet_link_add(host, &veth, &err_));
    TRY("allocate", cnet_pool_allocate(pool, id, "eth0", &c->addr, &err_));
    TRY("address", cnet_addr_add(c->h, "eth0", c->addr->cidr, &err_));
    TRY("lo up", cnet_link_set_up(c->h, "lo", &err_));
    dflt.dst = "default";
    dflt.via = "10.244.1.1";
    TRY("default route", cnet_route_add(c->h, &dflt, &err_));
    printf("attached %s: %s on eth0 in %s\n", id, c->addr->cidr, c->ns_name);
    rc = 0;
out:
    return rc;
}

int main(int argc, char **argv) {
    char host_name[64], dir[256];
    struct container c[2];
    cnet_netns *host_ns = NULL;
    cnet_handle *host = NULL;
    cnet_ipam_store *store = NULL;
    cnet_pool *pool = NULL;
    cnet_link_array *links = NULL;
    char *json = NULL;
    int status = 1;
    pid_t pid = getpid();

    printf("libcnet %s (header %s)\n", cnet_version(), CNET_VERSION);
    memset(c, 0, sizeof c);
    snprintf(host_name, sizeof host_name, "cn-exc-%d-h", (int)pid);
    for (int i = 0; i < 2; i++) {
        snprintf(c[i].ns_name, sizeof c[i].ns_name, "cn-exc-%d-c%d", (int)pid, i + 1);
        snprintf(c[i].veth, sizeof c[i].veth, "veth-c%d", i + 1);
    }
    snprintf(dir, sizeof dir, "%s", argc > 1 ? argv[1] : "/tmp/cnet-example-c-ipam");

    TRY("host namespace", cnet_netns_create(host_name, &host_ns, &err_));
    TRY("host handle", cnet_handle_new(host_ns, &host, &err_));
    {
        cnet_link_config br = {0};
        br.kind = CNET_LINK_BRIDGE;
        br.name = "cnet0";
        br.up = true;
        TRY("bridge", cnet_link_ensure(host, &br, NULL, &err_));
    }
    TRY("bridge address", cnet_addr_add(host, "cnet0", "10.244.1.1/24", &err_));
    TRY("ipam store", cnet_ipam_store_open_file(dir, &store, &err_));
    {
        cnet_pool_config pc = {0};
        pc.subnet = "10.244.1.0/24";
        pc.gateway = "10.244.1.1";
        TRY("pool", cnet_ipam_store_pool(store, &pc, &pool, &err_));
    }
    for (int i = 0; i < 2; i++) {
        char id[32];
        snprintf(id, sizeof id, "c%d-%d", i + 1, (int)pid);
        if (attach(host, pool, &c[i], id)) goto out;
    }
    TRY("links", cnet_link_list(host, &links, &err_));
    for (size_t i = 0; i < links->len; i++)
        printf("  host link %u %s (%s) mtu %u%s\n", links->items[i].index, links->items[i].name,
               links->items[i].kind_name, links->items[i].mtu, links->items[i].up ? " up" : "");
    {
        cnet_route_lookup_result r;
        TRY("route get", cnet_route_lookup(c[0].h, c[1].addr->addr, NULL, &r, &err_));
        printf("c1 -> %s: dev %s via %s src %s\n", c[1].addr->addr, r.dev,
               r.gateway[0] ? r.gateway : "(connected)", r.prefsrc);
    }
    /* The ping: the trace's ICMP echo from c1 to c2, watched on every hop. */
    TRY("trace", cnet_trace(c[0].ns, c[1].addr->addr, NULL, true, 2000, &json, &err_));
    printf("trace c1 -> c2: %s\n", json);
    if (!strstr(json, "\"replied\":true")) {
        fprintf(stderr, "bridge: no echo reply from %s\n", c[1].addr->addr);
        goto out;
    }
    printf("ping c1 -> c2: reply received\n");
    status = 0;
out:
    cnet_string_free(json);
    cnet_link_array_free(links);
    for (int i = 0; i < 2; i++) {
        if (c[i].addr && pool) {
            cnet_error *err = NULL;
            if (cnet_pool_release(pool, c[i].addr->container_id, c[i].addr->ifname, NULL, &err))
                failed("release", CNET_IO, err), status = 1;
        }
        cnet_alloc_free(c[i].addr);
        cnet_handle_free(c[i].h);
        cnet_netns_free(c[i].ns);
        cnet_netns_delete(c[i].ns_name, NULL, NULL);
    }
    cnet_pool_free(pool);
    cnet_ipam_store_free(store);
    cnet_handle_free(host);
    cnet_netns_free(host_ns);
    cnet_netns_delete(host_name, NULL, NULL);
    printf("torn down%s\n", status ? " (after a failure)" : "");
    return status;
}
