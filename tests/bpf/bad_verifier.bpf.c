// SPDX-License-Identifier: GPL-2.0
/* Test object the verifier must reject: it reads through a hash map value without the NULL check. */
#include "vmlinux.h"
#include <bpf/bpf_helpers.h>

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, __u64);
} bw_bad_map SEC(".maps");

SEC("xdp")
int bw_test_bad(struct xdp_md *ctx)
{
	__u32 k = 0;
	__u64 *v = bpf_map_lookup_elem(&bw_bad_map, &k);
	return *v ? 2 : 1; /* no NULL check */
}

char LICENSE[] SEC("license") = "GPL";
