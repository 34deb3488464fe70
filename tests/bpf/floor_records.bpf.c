// SPDX-License-Identifier: GPL-2.0
/* The floor under any tracer that reports each file operation: on the hooks
 * the file sensor uses, one record per open, fchown, fchmod and close, made
 * as the sensors make theirs (reserved in the ring, the task's ids, uid and
 * comm read with plain loads, submitted) and nothing else: no path, no
 * per-file state, no filter (bench/floor.py attaches them). */
#include "bw_helpers.bpf.h"

const volatile long nr_open = -1;
const volatile long nr_openat = -1;
const volatile long nr_close = -1;
const volatile long nr_fchown = -1;
const volatile long nr_fchmod = -1;

struct bw_floor_record {
	struct bw_hdr hdr;
	__u32 uid;
	__s32 ret;
	__u32 nr;
	char comm[BW_COMM_LEN];
};

BW_LAYOUT(struct bw_floor_record, floor_record);

SEC("tp_btf/sys_enter")
int BPF_PROG(bw_floor_rec_enter, struct pt_regs *regs, long id)
{
	return 0;
}

SEC("tp_btf/sys_exit")
int BPF_PROG(bw_floor_rec_exit, struct pt_regs *regs, long ret)
{
	long nr = bw_syscall_nr(regs);
	struct task_struct *task;
	struct bw_floor_record *r;

	if (nr != nr_openat && nr != nr_open && nr != nr_close && nr != nr_fchown && nr != nr_fchmod)
		return 0;
	r = bw_reserve(sizeof(*r));
	if (!r)
		return 0;
	task = bpf_get_current_task_btf();
	bw_fill_hdr(&r->hdr, 0, task);
	r->uid = bw_task_uid(task);
	r->ret = ret;
	r->nr = nr;
	bw_task_comm(r->comm, task);
	bw_submit(r, sizeof(*r));
	return 0;
}
