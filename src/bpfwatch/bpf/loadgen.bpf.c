// SPDX-License-Identifier: GPL-2.0
/* Load generator: for each syscall `target_nr` made by `target_tgid`, emits
 * `burst` fixed-size records. Used by tests and bench/, never by sensors. */
#include "bw_helpers.bpf.h"
#include "loadgen.h"

BW_LAYOUT(struct bw_bench_event, bench);

const volatile __u32 target_tgid = 0;
const volatile __s64 target_nr = -1;  /* -1: every syscall */
const volatile __u32 burst = 1;

struct burst_ctx {
	__u32 pid;
	__u32 tid;
	__u64 nr;
};

static long emit_one(__u64 i, struct burst_ctx *c)
{
	struct bw_bench_event *e = bw_reserve(sizeof(*e));

	if (!e)
		return 0;
	e->hdr.ts_boot_ns = bpf_ktime_get_boot_ns();
	e->hdr.type = BW_EV_BENCH;
	e->hdr.pid = c->pid;
	e->hdr.tid = c->tid;
	e->hdr.cpu = bpf_get_smp_processor_id();
	e->seq = i;
	e->nr = c->nr;
	bw_submit(e, sizeof(*e));
	return 0;
}

SEC("tp_btf/sys_enter")
int BPF_PROG(bw_loadgen, struct pt_regs *regs, long id)
{
	__u64 pt = bpf_get_current_pid_tgid();
	struct burst_ctx c;

	if ((pt >> 32) != target_tgid)
		return 0;
	if (target_nr >= 0 && id != target_nr)
		return 0;
	c.pid = pt >> 32;
	c.tid = (__u32)pt;
	c.nr = id;
	bpf_loop(burst, emit_one, &c, 0);
	return 0;
}
