// SPDX-License-Identifier: GPL-2.0
/* Counts the calls of one fentry program in bw_hits[0]: tests load, attach and fire
 * it where the kernel allows fentry programs (Debian 12's 6.1 in make test-kernel),
 * and expect a refusal in words where it does not. */
#include "vmlinux.h"
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_tracing.h>

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, __u64);
} bw_hits SEC(".maps");

SEC("fentry/hrtimer_nanosleep")
int BPF_PROG(bw_test_hit_fentry)
{
	__u32 zero = 0;
	__u64 *n = bpf_map_lookup_elem(&bw_hits, &zero);

	if (n)
		__sync_fetch_and_add(n, 1);
	return 0;
}

char LICENSE[] SEC("license") = "GPL";
