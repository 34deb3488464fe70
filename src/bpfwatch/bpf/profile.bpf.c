// SPDX-License-Identifier: GPL-2.0
/* Profiler for `bpfwatch run`: exact per-syscall counts, errors and latency,
 * off-CPU time by reason and network bytes of one process tree, aggregated in
 * the kernel. Tracked threads carry task-local storage (their process's slot),
 * so the hot path is one storage lookup and one per-CPU array slot: no hash,
 * no atomics, nothing for untracked tasks beyond the lookup. */
#include "bw_helpers.bpf.h"
#include "profile.h"

BW_LAYOUT(struct bw_prof_task, task);
BW_LAYOUT(struct bw_prof_sys, sys);
BW_LAYOUT(struct bw_prof_row, row);
BW_LAYOUT(struct bw_prof_hist_row, hist_row);
BW_LAYOUT(struct bw_prof_stats, stats);
BW_LAYOUT(struct bw_prof_fork_event, fork);
BW_LAYOUT(struct bw_prof_exec_event, exec);
BW_LAYOUT(struct bw_prof_exit_event, exit);
BW_LAYOUT(enum bw_off_reason, off_reason);
BW_LAYOUT(enum bw_prof_limits, limits);

/* Set by Python before load. The syscall numbers differ per architecture;
 * -1 where it has no such call (arm64: fork, vfork). */
const volatile __u32 prof_latency = 0;
const volatile long nr_clone = -1;
const volatile long nr_clone3 = -1;
const volatile long nr_fork = -1;
const volatile long nr_vfork = -1;
const volatile long nr_execve = -1;
const volatile long nr_execveat = -1;
const volatile long nr_exit = -1;
const volatile long nr_exit_group = -1;
const volatile long nr_rt_sigreturn = -1;

/* The hot path's view of a thread, indexed by tid (max_entries: pid_max):
 * 0 for threads not profiled, else (slot + 1) | flags << 24. An array
 * lookup is inlined by the verifier: no hashing, no locking. */
struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, __u32);
} bw_prof_tids SEC(".maps");

/* sys_enter time per tid (latency mode; max_entries: pid_max, else 1). */
struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, __u64);
} bw_prof_enter SEC(".maps");

/* Scheduler state of profiled threads, created at their first switch. */
struct {
	__uint(type, BPF_MAP_TYPE_TASK_STORAGE);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__type(key, int);
	__type(value, struct bw_prof_task);
} bw_prof_tasks SEC(".maps");

#define TID_SLOT_MASK 0xFFFFFF
#define TID_FLAGS_SHIFT 24

/* [slot].sys[nr]; max_entries set to the number of slots. */
struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct bw_prof_row);
} bw_prof_sys SEC(".maps");

/* [slot]; max_entries set to the number of slots. */
struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct bw_prof_stats);
} bw_prof_stats SEC(".maps");

/* Free slots; Python fills it and returns a slot once it has read it. */
struct {
	__uint(type, BPF_MAP_TYPE_QUEUE);
	__uint(max_entries, 1);
	__type(value, __u32);
} bw_prof_free SEC(".maps");

/* Latency histogram of the whole tree: [nr].bucket[log2(ns)]. */
struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, BW_PROF_NR);
	__type(key, __u32);
	__type(value, struct bw_prof_hist_row);
} bw_prof_hist SEC(".maps");

/* Errors of the whole tree by (nr << 12 | errno). */
struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_HASH);
	__uint(max_entries, 8192);
	__type(key, __u32);
	__type(value, __u64);
} bw_prof_errno SEC(".maps");

/* Category of each syscall number, filled by Python. */
struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, BW_PROF_NR);
	__type(key, __u32);
	__type(value, __u8);
} bw_prof_cat SEC(".maps");

static __always_inline __u32 *tid_entry(__u32 tid)
{
	__u32 *v = bpf_map_lookup_elem(&bw_prof_tids, &tid);

	return v && *v ? v : 0;
}

/* Scheduler state of a profiled thread (created on first use), or NULL. */
static __always_inline struct bw_prof_task *task_state(struct task_struct *task)
{
	__u32 *v = tid_entry(BPF_CORE_READ(task, pid));
	struct bw_prof_task *t;

	if (!v)
		return 0;
	t = bpf_task_storage_get(&bw_prof_tasks, task, 0, BPF_LOCAL_STORAGE_GET_F_CREATE);
	if (t)
		t->slot = (*v & TID_SLOT_MASK) - 1;
	return t;
}

static __always_inline struct bw_prof_stats *slot_stats(__u32 slot)
{
	return bpf_map_lookup_elem(&bw_prof_stats, &slot);
}

static __always_inline __u32 nr_index(long nr)
{
	return (unsigned long)nr < BW_PROF_NR ? nr : BW_PROF_NR - 1;
}

static __always_inline __u32 log2_u64(__u64 v)
{
	__u32 r = 0, s;

	s = (v > 0xFFFFFFFFULL) << 5; v >>= s; r |= s;
	s = (v > 0xFFFF) << 4; v >>= s; r |= s;
	s = (v > 0xFF) << 3; v >>= s; r |= s;
	s = (v > 0xF) << 2; v >>= s; r |= s;
	s = (v > 0x3) << 1; v >>= s; r |= s;
	return r | (v >> 1);
}

static __always_inline void count_syscall(__u32 slot, long nr, long ret, __u64 ns)
{
	__u32 n = nr_index(nr);
	struct bw_prof_row *row = bpf_map_lookup_elem(&bw_prof_sys, &slot);
	struct bw_prof_sys *v;

	/* the barriers keep each bound check where older verifiers (6.1) need
	 * it, on the register that indexes the row */
	barrier_var(n);
	if (!row || n >= BW_PROF_NR)
		return;
	v = &row->sys[n];
	v->calls++;
	if (ret < 0 && ret >= -4095) {
		__u32 key = n << 12 | (__u32)-ret;
		__u64 one = 1, *c;

		v->errors++;
		c = bpf_map_lookup_elem(&bw_prof_errno, &key);
		if (c)
			*c += 1;
		else
			bpf_map_update_elem(&bw_prof_errno, &key, &one, BPF_NOEXIST);
	}
	if (ns) {
		__u32 b = log2_u64(ns);
		struct bw_prof_hist_row *h;

		v->ns += ns;
		h = bpf_map_lookup_elem(&bw_prof_hist, &n);
		if (b >= BW_PROF_HIST)
			b = BW_PROF_HIST - 1;
		barrier_var(b);
		if (h && b < BW_PROF_HIST)
			h->bucket[b] += 1;
	}
}

SEC("tp_btf/sys_enter")
int BPF_PROG(bw_prof_sys_enter, struct pt_regs *regs, long id)
{
	__u32 tid = (__u32)bpf_get_current_pid_tgid();
	__u64 *ts;

	if (!tid_entry(tid))
		return 0;
	ts = bpf_map_lookup_elem(&bw_prof_enter, &tid);
	if (ts)
		*ts = bpf_ktime_get_ns();
	return 0;
}

SEC("tp_btf/sys_exit")
int BPF_PROG(bw_prof_sys_exit, struct pt_regs *regs, long ret)
{
	__u32 tid = (__u32)bpf_get_current_pid_tgid();
	__u32 *v = tid_entry(tid), val, flags;
	long nr;
	__u64 ns = 0;

	if (!v)
		return 0;
	val = *v;
	nr = bw_syscall_nr(regs);
	/* rt_sigreturn restores the registers of the interrupted code and
	 * marks them "not in a syscall" (-1), so the number is gone by now */
	if (nr == -1)
		nr = nr_rt_sigreturn;
	flags = val >> TID_FLAGS_SHIFT;
	if (flags) {
		if (flags & BW_PT_NEW) {
			/* a new task's first exit is its return from clone: the
			 * parent counted that call already */
			flags &= ~BW_PT_NEW;
			*v = (val & TID_SLOT_MASK) | flags << TID_FLAGS_SHIFT;
			if (nr == nr_clone || nr == nr_clone3 || nr == nr_fork || nr == nr_vfork)
				return 0;
		}
		if (flags & BW_PT_PRE_EXEC) {
			/* CMD waits for its release before exec: count from the execve */
			if (nr != nr_execve && nr != nr_execveat)
				return 0;
			flags &= ~BW_PT_PRE_EXEC;
			*v = (val & TID_SLOT_MASK) | flags << TID_FLAGS_SHIFT;
		}
	}
	if (prof_latency) {
		__u64 *ts = bpf_map_lookup_elem(&bw_prof_enter, &tid);

		if (ts && *ts) {
			ns = bpf_ktime_get_ns() - *ts;
			*ts = 0;
		}
	}
	count_syscall((val & TID_SLOT_MASK) - 1, nr, ret, ns);
	return 0;
}

SEC("tp_btf/sched_process_fork")
int BPF_PROG(bw_prof_fork, struct task_struct *parent, struct task_struct *child)
{
	__u32 *pv = tid_entry(BPF_CORE_READ(parent, pid));
	__u32 child_tid = BPF_CORE_READ(child, pid), val, pslot, slot;
	struct bw_prof_stats *st;
	int thread;

	if (!pv)
		return 0;
	val = *pv;
	pslot = (val & TID_SLOT_MASK) - 1;
	thread = BPF_CORE_READ(child, tgid) == BPF_CORE_READ(parent, tgid);
	slot = pslot;
	if (!thread && bpf_map_pop_elem(&bw_prof_free, &slot))
		slot = BW_PROF_SLOT_OVERFLOW;
	val = (slot + 1) | (BW_PT_NEW | ((val >> TID_FLAGS_SHIFT) & BW_PT_PRE_EXEC)) << TID_FLAGS_SHIFT;
	bpf_map_update_elem(&bw_prof_tids, &child_tid, &val, BPF_ANY);
	st = slot_stats(slot);
	if (st) {
		if (thread)
			st->threads++;
		else
			st->procs++;
	}
	if (thread)
		return 0;

	struct bw_prof_fork_event *e = bw_reserve(sizeof(*e));
	if (!e)
		return 0;
	bw_fill_hdr(&e->hdr, BW_EV_PROF_FORK, parent);
	e->child_start_boot_ns = BPF_CORE_READ(child, start_boottime);
	e->child_pid = BPF_CORE_READ(child, tgid);
	e->child_slot = slot;
	e->slot = pslot;
	e->pad = 0;
	BPF_CORE_READ_STR_INTO(&e->comm, parent, comm);
	bw_submit(e, sizeof(*e));
	return 0;
}

SEC("tp_btf/sched_process_exec")
int BPF_PROG(bw_prof_exec, struct task_struct *task, pid_t old_pid, struct linux_binprm *bprm)
{
	__u32 *v = tid_entry(BPF_CORE_READ(task, pid));
	struct bw_prof_exec_event *e;
	struct mm_struct *mm;
	__u64 start, end, size;
	__u32 n;
	long len;

	if (!v)
		return 0;
	e = bw_reserve(sizeof(*e));
	if (!e)
		return 0;
	bw_fill_hdr(&e->hdr, BW_EV_PROF_EXEC, task);
	e->slot = (*v & TID_SLOT_MASK) - 1;
	e->ppid = BPF_CORE_READ(task, real_parent, tgid);
	BPF_CORE_READ_STR_INTO(&e->comm, task, comm);
	len = bpf_probe_read_kernel_str(&e->filename, sizeof(e->filename), BPF_CORE_READ(bprm, filename));
	e->filename_len = len > 0 ? len : 0;
	mm = BPF_CORE_READ(task, mm);
	start = BPF_CORE_READ(mm, arg_start);
	end = BPF_CORE_READ(mm, arg_end);
	size = end > start ? end - start : 0;
	e->args_size = size;
	n = size < BW_PROF_ARGS ? size : BW_PROF_ARGS - 1;
	n &= BW_PROF_ARGS - 1; /* a power of two: the verifier sees the bound */
	if (n && bpf_probe_read_user(&e->args, n, (void *)start))
		n = 0;
	e->args_len = n;
	bw_submit(e, sizeof(*e));
	return 0;
}

/* High-water RSS in pages: the kernel updates hiwater_rss lazily, so also
 * take the current counters (file, anon, shmem; percpu counters' totals). */
/* Before Linux 6.2 the counters were atomics in one struct, not percpu_counters. */
struct mm_rss_stat___pre62 {
	atomic_long_t count[4];
};
struct mm_struct___pre62 {
	struct mm_rss_stat___pre62 rss_stat;
};

static __always_inline __u64 peak_rss(struct task_struct *task)
{
	struct mm_struct *mm = BPF_CORE_READ(task, mm);
	struct mm_struct___pre62 *old = (void *)mm;
	__s64 rss = 0, c;
	__u64 hi;

	if (!mm)
		return 0;
	hi = BPF_CORE_READ(mm, hiwater_rss);
	if (bpf_core_field_exists(mm->rss_stat[0].count)) {
		c = BPF_CORE_READ(mm, rss_stat[0].count); rss += c > 0 ? c : 0;
		c = BPF_CORE_READ(mm, rss_stat[1].count); rss += c > 0 ? c : 0;
		c = BPF_CORE_READ(mm, rss_stat[3].count); rss += c > 0 ? c : 0;
	} else if (bpf_core_field_exists(old->rss_stat.count)) {
		c = BPF_CORE_READ(old, rss_stat.count[0].counter); rss += c > 0 ? c : 0;
		c = BPF_CORE_READ(old, rss_stat.count[1].counter); rss += c > 0 ? c : 0;
		c = BPF_CORE_READ(old, rss_stat.count[3].counter); rss += c > 0 ? c : 0;
	}
	return (__u64)rss > hi ? (__u64)rss : hi;
}

/* Processes whose exit was reported, before Linux 6.16 (bw_group_dead_old). */
struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, 8192);
	__type(key, __u64);
	__type(value, __u8);
} bw_prof_exit_seen SEC(".maps");

static __always_inline int on_exit(struct task_struct *task, int group_dead)
{
	__u32 tid = BPF_CORE_READ(task, pid), zero = 0;
	__u32 *v = tid_entry(tid), val, slot;
	struct bw_prof_task *t;
	struct signal_struct *sig;
	struct bw_prof_stats *st;
	struct pt_regs *regs;
	long nr;

	if (!v)
		return 0;
	val = *v;
	slot = (val & TID_SLOT_MASK) - 1;
	t = bpf_task_storage_get(&bw_prof_tasks, task, 0, 0); /* none if it never ran since marked */
	/* the tid may be reused by an unrelated task from now on */
	bpf_map_update_elem(&bw_prof_tids, &tid, &zero, BPF_ANY);
	/* exit and exit_group never return, so sys_exit never sees them */
	regs = (struct pt_regs *)bpf_task_pt_regs(task);
	nr = bw_syscall_nr(regs);
	if ((nr == nr_exit || nr == nr_exit_group) && !((val >> TID_FLAGS_SHIFT) & BW_PT_PRE_EXEC))
		count_syscall(slot, nr, 0, 0);

	st = slot_stats(slot);
	if (st) {
		if (t && t->on_ns) {
			st->oncpu_ns += bpf_ktime_get_ns() - t->on_ns;
			t->on_ns = 0;  /* its last switch-out adds nothing more */
		}
		st->utime_ns += BPF_CORE_READ(task, utime);
		st->stime_ns += BPF_CORE_READ(task, stime);
		st->minflt += BPF_CORE_READ(task, min_flt);
		st->majflt += BPF_CORE_READ(task, maj_flt);
		st->nvcsw += BPF_CORE_READ(task, nvcsw);
		st->nivcsw += BPF_CORE_READ(task, nivcsw);
		if (bpf_core_field_exists(task->ioac)) {
			st->rchar += BPF_CORE_READ(task, ioac.rchar);
			st->wchar += BPF_CORE_READ(task, ioac.wchar);
			st->read_bytes += BPF_CORE_READ(task, ioac.read_bytes);
			st->write_bytes += BPF_CORE_READ(task, ioac.write_bytes);
		}
		st->threads_exited++;
	}
	if (!group_dead)
		return 0;

	struct bw_prof_exit_event *e = bw_reserve(sizeof(*e));
	if (!e)
		return 0;
	sig = BPF_CORE_READ(task, signal);
	bw_fill_hdr(&e->hdr, BW_EV_PROF_EXIT, task);
	e->start_boot_ns = BPF_CORE_READ(task, group_leader, start_boottime);
	e->slot = slot;
	e->ppid = BPF_CORE_READ(task, real_parent, tgid);
	if (BPF_CORE_READ(sig, flags) & 0x4 /* SIGNAL_GROUP_EXIT */)
		e->exit_code = BPF_CORE_READ(sig, group_exit_code);
	else
		e->exit_code = BPF_CORE_READ(task, exit_code);
	e->pad = 0;
	e->peak_rss_pages = peak_rss(task);
	BPF_CORE_READ_STR_INTO(&e->comm, task, comm);
	bw_submit(e, sizeof(*e));
	return 0;
}

/* Linux >= 6.16 passes group_dead; Python loads one of the two (autoload). */
SEC("tp_btf/sched_process_exit")
int BPF_PROG(bw_prof_exit, struct task_struct *task, bool group_dead)
{
	return on_exit(task, group_dead);
}

SEC("tp_btf/sched_process_exit")
int BPF_PROG(bw_prof_exit_old, struct task_struct *task)
{
	return on_exit(task, bw_group_dead_old(task, &bw_prof_exit_seen));
}

/* ---- off-CPU time ------------------------------------------------------- */

static __always_inline void account_off(struct bw_prof_task *t, __u64 now)
{
	struct bw_prof_stats *st = slot_stats(t->slot);
	__u64 d = now - t->off_ns;
	__u32 r = t->off_reason, c = t->off_cat;

	if (!st || t->off_ns == 0 || now < t->off_ns)
		return;
	if (r < BW_OFF_N)
		st->off_ns[r] += d;
	if (r != BW_OFF_RUNQ && c < BW_PROF_CATS)
		st->blocked_ns[c] += d;
}

SEC("tp_btf/sched_switch")
int BPF_PROG(bw_prof_switch, bool preempt, struct task_struct *prev, struct task_struct *next,
	     unsigned int prev_state)
{
	struct bw_prof_task *t;
	__u64 now = bpf_ktime_get_ns();

	t = task_state(prev);
	if (t) {
		if (t->on_ns) {
			struct bw_prof_stats *st = slot_stats(t->slot);

			if (st && now > t->on_ns)
				st->oncpu_ns += now - t->on_ns;
			t->on_ns = 0;
		}
		t->off_ns = now;
		if (preempt || !(prev_state & 0x3)) {
			t->off_reason = BW_OFF_RUNQ;
		} else {
			struct pt_regs *regs = (struct pt_regs *)bpf_task_pt_regs(prev);
			long nr = bw_syscall_nr(regs);
			__u32 n = nr_index(nr);
			__u8 *cat = bpf_map_lookup_elem(&bw_prof_cat, &n);

			t->off_reason = (prev_state & 0x2) ? BW_OFF_IO : BW_OFF_SLEEP;
			t->off_cat = nr < 0 || !cat ? BW_PROF_NO_SYSCALL : *cat;
		}
	}
	t = task_state(next);
	if (t) {
		if (t->off_ns)
			account_off(t, now);
		t->off_ns = 0;
		t->on_ns = now;
	}
	return 0;
}

SEC("tp_btf/sched_wakeup")
int BPF_PROG(bw_prof_wakeup, struct task_struct *p)
{
	struct bw_prof_task *t = task_state(p);
	__u64 now;

	if (!t || !t->off_ns || t->off_reason == BW_OFF_RUNQ)
		return 0;
	now = bpf_ktime_get_ns();
	account_off(t, now);
	t->off_ns = now;
	t->off_reason = BW_OFF_RUNQ;
	return 0;
}

SEC("tp_btf/sched_wakeup_new")
int BPF_PROG(bw_prof_wakeup_new, struct task_struct *p)
{
	struct bw_prof_task *t = task_state(p);

	if (t) {
		t->off_ns = bpf_ktime_get_ns();
		t->off_reason = BW_OFF_RUNQ;
	}
	return 0;
}

/* ---- network bytes ------------------------------------------------------ */

static __always_inline void count_net(struct sock *sk, int ret, int tx)
{
	struct bw_prof_stats *st;
	__u32 *v;
	__u16 family;

	if (ret <= 0)
		return;
	family = BPF_CORE_READ(sk, __sk_common.skc_family);
	if (family != 2 /* AF_INET */ && family != 10 /* AF_INET6 */)
		return;
	v = tid_entry((__u32)bpf_get_current_pid_tgid());
	if (!v)
		return;
	st = slot_stats((*v & TID_SLOT_MASK) - 1);
	if (!st)
		return;
	if (tx)
		st->net_tx += ret;
	else
		st->net_rx += ret;
}

SEC("tp_btf/sock_send_length")
int BPF_PROG(bw_prof_send, struct sock *sk, int ret, int flags)
{
	count_net(sk, ret, 1);
	return 0;
}

SEC("tp_btf/sock_recv_length")
int BPF_PROG(bw_prof_recv, struct sock *sk, int ret, int flags)
{
	if (flags & BW_MSG_PEEK)
		return 0;
	count_net(sk, ret, 0);
	return 0;
}
