// SPDX-License-Identifier: GPL-2.0
/* Benchmark traffic source: run with BPF_PROG_TEST_RUN in live-frames mode,
 * it sends its test packet out of `out_ifindex` (bench/xdp_counter.py); and
 * an empty XDP program, the baseline the counter is compared with. */
#include "vmlinux.h"
#include <bpf/bpf_helpers.h>

const volatile __u32 out_ifindex = 0;

SEC("xdp")
int bw_xdp_gen(struct xdp_md *ctx)
{
	return bpf_redirect(out_ifindex, 0);
}

SEC("xdp")
int bw_xdp_pass(struct xdp_md *ctx)
{
	return XDP_PASS;
}

char LICENSE[] SEC("license") = "GPL";
