// SPDX-License-Identifier: GPL-2.0
/* The floor under any syscall tracer: empty programs on the tracepoints
 * bpfwatch's sensors and profiler hook (bench/floor.py attaches them). */
#include "vmlinux.h"
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_tracing.h>

SEC("tp_btf/sys_enter")
int BPF_PROG(bw_floor_enter, struct pt_regs *regs, long id)
{
	return 0;
}

SEC("tp_btf/sys_exit")
int BPF_PROG(bw_floor_exit, struct pt_regs *regs, long ret)
{
	return 0;
}

/* the same with one clock read each: timing a syscall needs a timestamp at
 * entry and one at exit, whatever else a tracer does */
__u64 bw_floor_sink;

SEC("tp_btf/sys_enter")
int BPF_PROG(bw_floor_enter_ts, struct pt_regs *regs, long id)
{
	bw_floor_sink += bpf_ktime_get_ns();
	return 0;
}

SEC("tp_btf/sys_exit")
int BPF_PROG(bw_floor_exit_ts, struct pt_regs *regs, long ret)
{
	bw_floor_sink += bpf_ktime_get_ns();
	return 0;
}

/* the least any syscall counter does: the call's number read from the saved
 * registers and one per-CPU cell incremented, with no thread or process
 * attribution (`run --count-only` also finds the thread's slot) */
struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1024);
	__type(key, __u32);
	__type(value, __u64);
} bw_floor_counts SEC(".maps");

SEC("tp_btf/sys_exit")
int BPF_PROG(bw_floor_exit_count, struct pt_regs *regs, long ret)
{
#if defined(__TARGET_ARCH_x86)
	__u32 nr = regs->orig_ax;
#elif defined(__TARGET_ARCH_arm64)
	__u32 nr = regs->syscallno;
#else
	__u32 nr = 0;
#endif
	__u64 *c = bpf_map_lookup_elem(&bw_floor_counts, &nr);

	if (c)
		*c += 1;
	return 0;
}

/* a second sys_exit program: `trace -t security` runs the security sensor's
 * and the file sensor's there */
SEC("tp_btf/sys_exit")
int BPF_PROG(bw_floor_exit2, struct pt_regs *regs, long ret)
{
	return 0;
}

char LICENSE[] SEC("license") = "GPL";
