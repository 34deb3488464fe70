// SPDX-License-Identifier: GPL-2.0
/* Syscall counts, errors and time per (process, syscall), in the kernel:
 * nothing goes through the ring. The shared scope filters apply. */
#include "bw_filter.bpf.h"
#include "syscount.h"

BW_LAYOUT(struct bw_sc_key, sc_key);
BW_LAYOUT(struct bw_sc_stats, sc_stats);

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 65536);
	__type(key, struct bw_sc_key);
	__type(value, struct bw_sc_stats);
} bw_sc_counts SEC(".maps");

/* entry time of the syscall in progress, per thread */
struct {
	__uint(type, BPF_MAP_TYPE_TASK_STORAGE);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__type(key, int);
	__type(value, __u64);
} bw_sc_start SEC(".maps");

/* full-table updates that failed (more than 65536 process/syscall pairs) */
struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, __u64);
} bw_sc_dropped SEC(".maps");

SEC("tp_btf/sys_enter")
int BW_CHAINED(sys_enter, bw_sc_enter, struct pt_regs *regs, long id)
{
	struct task_struct *task = bpf_get_current_task_btf();
	__u32 tgid = bpf_get_current_pid_tgid() >> 32;

	if (!in_scope(tgid) || !matches(task))
		return 0;
	__u64 *ts = bpf_task_storage_get(&bw_sc_start, task, 0, BPF_LOCAL_STORAGE_GET_F_CREATE);
	if (ts)
		*ts = bpf_ktime_get_ns();
	return 0;
}

SEC("tp_btf/sys_exit")
int BW_CHAINED(sys_exit, bw_sc_exit, struct pt_regs *regs, long ret)
{
	struct task_struct *task = bpf_get_current_task_btf();
	__u64 *ts = bpf_task_storage_get(&bw_sc_start, task, 0, 0);

	if (!ts || !*ts)
		return 0;
	__u64 dt = bpf_ktime_get_ns() - *ts;
	*ts = 0;
	struct bw_sc_key key = { .tgid = bpf_get_current_pid_tgid() >> 32, .nr = bw_syscall_nr(regs) };
	struct bw_sc_stats *st = bpf_map_lookup_elem(&bw_sc_counts, &key);

	if (!st) {
		struct bw_sc_stats fresh = {};

		bpf_get_current_comm(&fresh.comm, sizeof(fresh.comm));
		if (bpf_map_update_elem(&bw_sc_counts, &key, &fresh, BPF_NOEXIST) && bpf_map_lookup_elem(&bw_sc_counts, &key) == 0) {
			__u32 zero = 0;
			__u64 *d = bpf_map_lookup_elem(&bw_sc_dropped, &zero);
			if (d)
				(*d)++;
			return 0;
		}
		st = bpf_map_lookup_elem(&bw_sc_counts, &key);
		if (!st)
			return 0;
	}
	/* the name of the program now running: an entry made before an exec (bash
	 * reading its locale, then exec'ing cat) takes the new name; comparing 8
	 * bytes first keeps the common case to one read */
	__u64 name = 0;
	bpf_probe_read_kernel(&name, sizeof(name), task->comm);
	if (name != *(__u64 *)st->comm)
		bpf_get_current_comm(&st->comm, sizeof(st->comm));
	__sync_fetch_and_add(&st->count, 1);
	if (ret < 0 && ret > -4096)
		__sync_fetch_and_add(&st->errors, 1);
	__sync_fetch_and_add(&st->total_ns, dt);
	if (dt > st->max_ns)
		st->max_ns = dt;
	return 0;
}
