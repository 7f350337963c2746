/* The cost of a call through libcnet from C (run by scripts/bench-ffi,
 * which makes the namespace): 10,000 cnet_route_lookup calls, `ip route
 * get DST` in namespace NS. Prints "RESULT c-libcnet <ns per call>".
 * Usage: ./bench_lookup NS DST */
#include <cnet.h>
#include <stdio.h>
#include <time.h>

#define N 10000

static double now_ns(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (double)t.tv_sec * 1e9 + (double)t.tv_nsec;
}

int main(int argc, char **argv) {
    cnet_netns *ns = NULL;
    cnet_handle *h = NULL;
    cnet_route_lookup_result r;
    int status = 1;
    if (argc != 3) {
        fprintf(stderr, "usage: bench_lookup NS DST\n");
        return 2;
    }
    if (cnet_netns_open(argv[1], &ns, NULL) || cnet_handle_new(ns, &h, NULL)) goto out;
    for (int i = 0; i < 1000; i++)
        if (cnet_route_lookup(h, argv[2], NULL, &r, NULL)) goto out;
    double t0 = now_ns();
    for (int i = 0; i < N; i++)
        if (cnet_route_lookup(h, argv[2], NULL, &r, NULL)) goto out;
    double per = (now_ns() - t0) / N;
    printf("%16s: %d lookups in %.1f ms, %.0f ns/call (dev %s)\n", "c-libcnet", N,
           per * N / 1e6, per, r.dev);
    printf("RESULT c-libcnet %.0f\n", per);
    status = 0;
out:
    if (status) fprintf(stderr, "bench_lookup: a call failed\n");
    cnet_handle_free(h);
    cnet_netns_free(ns);
    return status;
}
