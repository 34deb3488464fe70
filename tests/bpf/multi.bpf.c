// SPDX-License-Identifier: GPL-2.0
/* Test object with one program per remaining attach kind: uprobe, raw
 * tracepoint, tp_btf (target set from the spec), cgroup skb and socket
 * filter. Each counts its runs in bw_multi_hits[slot]. */
#include "vmlinux.h"
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_tracing.h>

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 8);
	__type(key, __u32);
	__type(value, __u64);
} bw_multi_hits SEC(".maps");

static __always_inline void hit(__u32 slot)
{
	__u64 *v = bpf_map_lookup_elem(&bw_multi_hits, &slot);
	if (v)
		__sync_fetch_and_add(v, 1);
}

SEC("uprobe")
int bw_test_uprobe(void *ctx)
{
	hit(0);
	return 0;
}

SEC("raw_tp")
int bw_test_rawtp(void *ctx)
{
	hit(1);
	return 0;
}

SEC("tp_btf/sched_process_exit")
int BPF_PROG(bw_test_tpbtf, struct task_struct *task)
{
	hit(2);
	return 0;
}

SEC("cgroup_skb/egress")
int bw_test_cgskb(struct __sk_buff *skb)
{
	hit(3);
	return 1; /* allow */
}

SEC("socket")
int bw_test_sock(struct __sk_buff *skb)
{
	hit(4);
	return 0; /* keep nothing: the socket only counts */
}

char LICENSE[] SEC("license") = "GPL";
