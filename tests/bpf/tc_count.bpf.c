// SPDX-License-Identifier: GPL-2.0
/* Test object: a tc counter and a tracepoint counter, for prog load/attach/pin tests. */
#include "vmlinux.h"
#include <bpf/bpf_helpers.h>

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 2);
	__type(key, __u32);
	__type(value, __u64);
} bw_test_counts SEC(".maps");

struct bw_test_pair {
	__u32 pid;
	char comm[16];
	__u64 hits;
};

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 64);
	__type(key, __u32);
	__type(value, struct bw_test_pair);
} bw_test_struct SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, __u64);
} bw_test_percpu SEC(".maps");

static __always_inline void bump(__u32 k)
{
	__u64 *v = bpf_map_lookup_elem(&bw_test_counts, &k);
	if (v)
		__sync_fetch_and_add(v, 1);
}

SEC("tc")
int bw_test_tc(struct __sk_buff *skb)
{
	bump(0);
	return 0; /* TC_ACT_OK */
}

SEC("tracepoint/syscalls/sys_enter_getppid")
int bw_test_tp(void *ctx)
{
	__u32 zero = 0;
	__u64 *pc = bpf_map_lookup_elem(&bw_test_percpu, &zero);
	if (pc)
		(*pc)++;
	bump(1);
	return 0;
}

char LICENSE[] SEC("license") = "GPL";
