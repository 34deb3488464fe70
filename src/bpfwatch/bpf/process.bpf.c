// SPDX-License-Identifier: GPL-2.0
/* Process sensor: exec, fork and exit from BTF tracepoints, with pid, comm
 * and uid filters and descendant tracking done in the kernel. */
#include "bw_filter.bpf.h"
#include "process.h"

BW_LAYOUT(struct bw_exec_event, exec);
BW_LAYOUT(struct bw_fork_event, fork);
BW_LAYOUT(struct bw_exit_event, exit);
BW_LAYOUT(struct bw_exec_fail_event, exec_fail);

/* Filters beyond the shared ones (bw_filter.bpf.h), set by Python before load. */
const volatile __u32 flt_follow = 0;      /* children of tracked tgids are tracked */
const volatile __u32 emit_mask = 0xffffffff; /* bit (1 << type) per event type */
const volatile __u32 emit_threads = 0;
const volatile __u32 args_max = BW_ARGS_MAX;
/* syscall numbers, from Python's table (failed execs) */
const volatile __s32 nr_execve = -1, nr_execveat = -1;

/* Exec records are assembled here, then copied to the ring at their real size.
 * Slack after the record keeps masked offsets inside the value. */
#define BW_EXEC_PATHS (8 * BW_PATH_MAX)  /* exe, cwd, parent exe, filename, interpreter */
#define BW_EXEC_DATA (2 * BW_EXEC_PATHS + 2 * BW_ARGS_MAX)
struct bw_exec_buf {
	__u8 raw[sizeof(struct bw_exec_event) + BW_EXEC_DATA];
};

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1); /* set to the number of CPUs before load */
	__type(key, __u32);
	__type(value, struct bw_exec_buf);
} bw_exec_scratch SEC(".maps");

static __always_inline int want(__u32 type)
{
	return emit_mask & (1u << type);
}

SEC("tp_btf/sched_process_exec")
int BPF_PROG(bw_proc_exec, struct task_struct *task, pid_t old_pid, struct linux_binprm *bprm)
{
	__u32 tgid = BPF_CORE_READ(task, tgid);
	__u32 cpu = bpf_get_smp_processor_id();
	struct bw_exec_buf *b;
	struct task_struct *parent;
	struct mm_struct *mm;
	__u32 off = 0;

	if (!want(BW_EV_EXEC) || !in_scope(tgid) || !matches(task))
		return 0;
	b = bpf_map_lookup_elem(&bw_exec_scratch, &cpu);
	if (!b)
		return 0;

	struct bw_exec_event *e = (void *)b->raw;
	__u8 *data = b->raw + sizeof(*e);
	bw_fill_hdr(&e->hdr, BW_EV_EXEC, task);
	e->cgroup_id = bpf_get_current_cgroup_id();
	e->start_boot_ns = BPF_CORE_READ(task, start_boottime);
	e->old_pid = old_pid;
	parent = BPF_CORE_READ(task, real_parent);
	e->ppid = BPF_CORE_READ(parent, tgid);
	e->uid = BPF_CORE_READ(task, cred, uid.val);
	e->gid = BPF_CORE_READ(task, cred, gid.val);
	e->euid = BPF_CORE_READ(task, cred, euid.val);
	e->egid = BPF_CORE_READ(task, cred, egid.val);
	e->loginuid = (__u32)-1;
	if (bpf_core_field_exists(task->loginuid))
		e->loginuid = BPF_CORE_READ(task, loginuid.val);

	struct pid *tpid = BPF_CORE_READ(task, thread_pid);
	__u32 level = BPF_CORE_READ(tpid, level);
	struct upid up = {};
	bpf_core_read(&up, sizeof(up), &tpid->numbers[level & 31]);
	e->ns_pid = up.nr;
	e->pidns = BPF_CORE_READ(up.ns, ns.inum);

	BPF_CORE_READ_STR_INTO(&e->comm, task, comm);
	BPF_CORE_READ_STR_INTO(&e->pcomm, parent, comm);
	e->tty[0] = 0;
	struct tty_struct *tty = BPF_CORE_READ(task, signal, tty);
	if (tty)
		BPF_CORE_READ_STR_INTO(&e->tty, tty, name);

	e->flags = 0;
	struct file *exe_file = BPF_CORE_READ(bprm, file);
	e->exe_len = bw_put_path(data, &off, &exe_file->f_path, &e->flags, BW_EXEC_EXE_TRUNCATED,
				 BW_EXEC_EXE_PSEUDO);
	struct fs_struct *fs = BPF_CORE_READ(task, fs);
	e->cwd_len = bw_put_path(data, &off, &fs->pwd, &e->flags, BW_EXEC_CWD_TRUNCATED, 0);
	struct file *pexe = BPF_CORE_READ(parent, mm, exe_file);
	e->pexe_len = 0;
	if (pexe)
		e->pexe_len = bw_put_path(data, &off, &pexe->f_path, &e->flags, BW_EXEC_PEXE_TRUNCATED, 0);

	/* the name execve was given, and the interpreter when the file was a
	 * script (binfmt_script and binfmt_misc replace bprm->interp) */
	const char *filename = BPF_CORE_READ(bprm, filename);
	const char *interp = BPF_CORE_READ(bprm, interp);
	long n_str;

	e->pad = 0;
	e->filename_len = 0;
	e->interp_len = 0;
	off &= (4 * BW_PATH_MAX - 1);
	n_str = bpf_probe_read_kernel_str(data + off, BW_PATH_MAX, filename);
	if (n_str > 0) {
		e->filename_len = n_str;
		off += n_str & (BW_PATH_MAX - 1 + BW_PATH_MAX);
	}
	if (interp && interp != filename) {
		off &= (BW_EXEC_PATHS - 1);
		n_str = bpf_probe_read_kernel_str(data + off, BW_PATH_MAX, interp);
		if (n_str > 0) {
			e->interp_len = n_str;
			off += n_str & (BW_PATH_MAX - 1 + BW_PATH_MAX);
		}
	}

	/* argv lives on the new stack between arg_start and arg_end */
	mm = BPF_CORE_READ(task, mm);
	__u64 arg_start = BPF_CORE_READ(mm, arg_start);
	__u64 arg_end = BPF_CORE_READ(mm, arg_end);
	__u64 size = arg_end > arg_start ? arg_end - arg_start : 0;
	__u32 cap = args_max < BW_ARGS_MAX ? args_max : BW_ARGS_MAX;
	__u32 n = size > cap ? cap : size;

	e->argc = BPF_CORE_READ(bprm, argc);
	e->args_size = size;
	if (n < size)
		e->flags |= BW_EXEC_ARGS_TRUNCATED;
	off &= (BW_EXEC_PATHS - 1);
	n &= (2 * BW_ARGS_MAX - 1);
	if (n && bpf_probe_read_user(data + off, n, (void *)arg_start)) {
		e->flags |= BW_EXEC_ARGS_FAULT;
		n = 0;
	}
	e->args_len = n;

	__u64 total = sizeof(*e) + off + n;
	if (total > sizeof(*b))
		return 0;
	bw_output_var(e, total, sizeof(*b));
	return 0;
}

SEC("tp_btf/task_newtask")
int BPF_PROG(bw_proc_fork, struct task_struct *child, u64 clone_flags)
{
	struct task_struct *cur = (struct task_struct *)bpf_get_current_task_btf();
	__u32 tgid = BPF_CORE_READ(cur, tgid);
	__u32 child_tgid = BPF_CORE_READ(child, tgid);
	int thread = child_tgid == tgid;

	if (!in_scope(tgid))
		return 0;
	if (flt_tracked && flt_follow && !thread) {
		__u8 *how = bpf_map_lookup_elem(&bw_tracked, &tgid);

		if (how && *how == BW_TRACK_FOLLOW) {
			__u8 follow = BW_TRACK_FOLLOW;

			bpf_map_update_elem(&bw_tracked, &child_tgid, &follow, BPF_ANY);
		}
	}
	if (!want(BW_EV_FORK) || (thread && !emit_threads) || !matches(cur))
		return 0;

	struct bw_fork_event *e = bw_reserve(sizeof(*e));
	if (!e)
		return 0;
	bw_fill_hdr(&e->hdr, BW_EV_FORK, cur);
	e->cgroup_id = bpf_get_current_cgroup_id();
	e->clone_flags = clone_flags;
	e->child_start_boot_ns = BPF_CORE_READ(child, start_boottime);
	e->ppid = BPF_CORE_READ(cur, real_parent, tgid);
	e->uid = bw_task_uid(cur);
	e->child_pid = child_tgid;
	e->child_tid = BPF_CORE_READ(child, pid);
	e->flags = thread ? BW_FORK_THREAD : 0;
	e->pad = 0;
	bw_task_comm(e->comm, cur);
	bw_submit(e, sizeof(*e));
	return 0;
}

/* CPU time of the whole thread group: threads already reaped are summed in
 * signal_struct; the ones still listed (this one, exiting or zombie siblings)
 * are added one by one, as thread_group_cputime() does. */
struct bw_times_ctx {
	struct list_head *head;
	struct list_head *pos;
	__u64 utime;
	__u64 stime;
};

static long bw_times_step(__u64 i, struct bw_times_ctx *c)
{
	struct list_head *pos = c->pos;

	if (!pos || pos == c->head)
		return 1;
	struct task_struct *t = (void *)pos - bpf_core_field_offset(struct task_struct, thread_node);

	c->utime += BPF_CORE_READ(t, utime);
	c->stime += BPF_CORE_READ(t, stime);
	c->pos = BPF_CORE_READ(pos, next);
	return 0;
}

static __always_inline void group_times(struct task_struct *task, struct signal_struct *sig,
					 struct bw_exit_event *e)
{
	e->utime_ns = BPF_CORE_READ(sig, utime);
	e->stime_ns = BPF_CORE_READ(sig, stime);
	if (BPF_CORE_READ(sig, nr_threads) <= 1) {
		e->utime_ns += BPF_CORE_READ(task, utime);
		e->stime_ns += BPF_CORE_READ(task, stime);
		return;
	}
	struct bw_times_ctx c = {};

	c.head = (struct list_head *)((void *)sig + bpf_core_field_offset(struct signal_struct, thread_head));
	c.pos = BPF_CORE_READ(sig, thread_head.next);
	bpf_loop(4096, bw_times_step, &c, 0);
	e->utime_ns += c.utime;
	e->stime_ns += c.stime;
}

/* Kernels whose tracepoint does not say whether the group died (< 6.16)
 * guess from signal->live, which two threads exiting at once can both see
 * at zero: the first guess per process wins. */
struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, 8192);
	__type(key, __u64);  /* tgid << 32 ^ the leader's start time */
	__type(value, __u8);
} bw_exit_seen SEC(".maps");

static __always_inline int on_exit(struct task_struct *task, int group_dead)
{
	__u32 tgid = BPF_CORE_READ(task, tgid);
	struct signal_struct *sig = BPF_CORE_READ(task, signal);

	if (!in_scope(tgid))
		return 0;
	if (group_dead && flt_tracked && flt_follow)
		bpf_map_delete_elem(&bw_tracked, &tgid);
	if (!want(BW_EV_EXIT) || (!group_dead && !emit_threads) || !matches(task))
		return 0;

	struct bw_exit_event *e = bw_reserve(sizeof(*e));
	if (!e)
		return 0;
	bw_fill_hdr(&e->hdr, BW_EV_EXIT, task);
	e->cgroup_id = bpf_get_current_cgroup_id();
	if (group_dead) {
		e->start_boot_ns = BPF_CORE_READ(task, group_leader, start_boottime);
		group_times(task, sig, e);
	} else {
		/* a thread: its own lifetime and CPU time */
		e->start_boot_ns = BPF_CORE_READ(task, start_boottime);
		e->utime_ns = BPF_CORE_READ(task, utime);
		e->stime_ns = BPF_CORE_READ(task, stime);
	}
	e->ppid = BPF_CORE_READ(task, real_parent, tgid);
	e->uid = bw_task_uid(task);
	if (BPF_CORE_READ(sig, flags) & 0x4 /* SIGNAL_GROUP_EXIT */)
		e->exit_code = BPF_CORE_READ(sig, group_exit_code);
	else
		e->exit_code = BPF_CORE_READ(task, exit_code);
	e->flags = group_dead ? 0 : BW_EXIT_THREAD;
	bw_task_comm(e->comm, task);
	bw_submit(e, sizeof(*e));
	return 0;
}

/* Linux >= 6.16: the tracepoint passes group_dead, decided under the lock
 * that decrements signal->live */
SEC("tp_btf/sched_process_exit")
int BPF_PROG(bw_proc_exit, struct task_struct *task, bool group_dead)
{
	return on_exit(task, group_dead);
}

SEC("tp_btf/sched_process_exit")
int BPF_PROG(bw_proc_exit_old, struct task_struct *task)
{
	return on_exit(task, bw_group_dead_old(task, &bw_exit_seen));
}

/* ---- failed execs (opt-in: a sys_exit program costs every syscall) ---------- */

#define BW_FAIL_PATHS (2 * BW_PATH_MAX)  /* cwd, filename; a per-CPU value stays under 32 KiB */
struct bw_exec_fail_buf {
	__u8 raw[sizeof(struct bw_exec_fail_event) + 2 * BW_FAIL_PATHS + 2 * BW_FAIL_ARGS_MAX];
};

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct bw_exec_fail_buf);
} bw_exec_fail_scratch SEC(".maps");

struct bw_argv_ctx {
	const char *const *argv;
	__u8 *data;
	__u32 off;     /* from the start of argv's bytes */
	__u32 argc;
	__u32 flags;
};

static long bw_argv_step(__u64 i, struct bw_argv_ctx *c)
{
	const char *arg = 0;

	if (bpf_probe_read_user(&arg, sizeof(arg), &c->argv[i])) {
		c->flags |= BW_EXEC_FAIL_FAULT;
		return 1;
	}
	if (!arg)
		return 1;
	__u32 off = c->off;

	if (off >= BW_FAIL_ARGS_MAX) {
		c->flags |= BW_EXEC_FAIL_ARGS_TRUNCATED;
		return 1;
	}
	long n = bpf_probe_read_user_str(c->data + (off & (BW_FAIL_ARGS_MAX - 1)), BW_FAIL_ARGS_MAX - off, arg);

	if (n <= 0) {
		c->flags |= BW_EXEC_FAIL_FAULT;
		return 1;
	}
	c->off = off + n;
	c->argc++;
	if (c->off >= BW_FAIL_ARGS_MAX)
		c->flags |= BW_EXEC_FAIL_ARGS_TRUNCATED;
	return 0;
}

SEC("tp_btf/sys_exit")
int BW_CHAINED(sys_exit, bw_proc_exec_fail, struct pt_regs *regs, long ret)
{
	long nr;

	if (ret >= 0)
		return 0;
	nr = bw_syscall_nr(regs);
	if (nr != nr_execve && nr != nr_execveat)
		return 0;
	struct task_struct *task = (struct task_struct *)bpf_get_current_task_btf();
	__u32 tgid = task->tgid;
	__u32 cpu_key = 0;

	if (!in_scope(tgid) || !matches(task))
		return 0;
	struct bw_exec_fail_buf *b = bpf_map_lookup_elem(&bw_exec_fail_scratch, &cpu_key);

	if (!b)
		return 0;
	struct bw_exec_fail_event *e = (void *)b->raw;
	__u8 *data = b->raw + sizeof(*e);
	int at = nr == nr_execveat;
	__u32 off = 0;

	bw_fill_hdr(&e->hdr, BW_EV_EXEC_FAIL, task);
	e->cgroup_id = bpf_get_current_cgroup_id();
	e->ret = ret;
	e->ppid = BPF_CORE_READ(task, real_parent, tgid);
	e->uid = bw_task_uid(task);
	e->dirfd = at ? (__s32)bw_syscall_arg(regs, 0) : -100 /* AT_FDCWD */;
	e->at_flags = at ? (__u32)bw_syscall_arg(regs, 4) : 0;
	e->flags = 0;
	e->pad = 0;
	bw_task_comm(e->comm, task);
	struct fs_struct *fs = task->fs;

	e->cwd_len = bw_put_path(data, &off, &fs->pwd, &e->flags, 0, 0);
	off &= (BW_FAIL_PATHS - 1);
	long n = bpf_probe_read_user_str(data + off, BW_PATH_MAX, (void *)bw_syscall_arg(regs, at ? 1 : 0));

	e->filename_len = n > 0 ? n : 0;
	if (n > 0)
		off += n & (2 * BW_PATH_MAX - 1);
	off &= (2 * BW_FAIL_PATHS - 1);

	struct bw_argv_ctx c = { .argv = (void *)bw_syscall_arg(regs, at ? 2 : 1), .data = data + off };

	if (c.argv)
		bpf_loop(BW_FAIL_ARGC_MAX, bw_argv_step, &c, 0);
	e->argc = c.argc;
	e->args_len = c.off > BW_FAIL_ARGS_MAX ? BW_FAIL_ARGS_MAX : c.off;
	e->flags |= c.flags;

	__u64 total = sizeof(*e) + off + e->args_len;
	if (total > sizeof(*b))
		return 0;
	bw_output_var(e, total, sizeof(*b));
	return 0;
}
