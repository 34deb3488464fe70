/* SPDX-License-Identifier: GPL-2.0 */
/* The counter of the hit_*.bpf.c test objects: each counts its program's calls
 * in bw_hits[0], so a test sees that the program really ran. */
#ifndef BW_TEST_HIT_BPF_H
#define BW_TEST_HIT_BPF_H
#include "vmlinux.h"
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_tracing.h>

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, __u64);
} bw_hits SEC(".maps");

static __always_inline int count_hit(void)
{
	__u32 zero = 0;
	__u64 *n = bpf_map_lookup_elem(&bw_hits, &zero);

	if (n)
		__sync_fetch_and_add(n, 1);
	return 0;
}

char LICENSE[] SEC("license") = "GPL";
#endif
