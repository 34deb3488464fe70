/* SPDX-License-Identifier: GPL-2.0 */
/* Helpers shared by bpfwatch BPF programs: ring buffer emission with loss
 * accounting and wake-up batching, and path reconstruction from dentries. */
#ifndef BW_HELPERS_BPF_H
#define BW_HELPERS_BPF_H

#include "vmlinux.h"
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_core_read.h>
#include <bpf/bpf_tracing.h>
#include "bw_common.h"

char LICENSE[] SEC("license") = "GPL";

/* Emits a record layout into the object's BTF (clang leaves out types only
 * reached through casts); the Python decoder reads layouts from there. */
#define BW_LAYOUT(type, name) type *bw_layout_##name __attribute__((unused))

/* recvmsg flag: a peek reads bytes that a later read returns again */
#define BW_MSG_PEEK 2

BW_LAYOUT(struct bw_hdr, hdr);
BW_LAYOUT(enum bw_event_type, event_type);

/* Ring buffer; Python sets the size before load (default 16 MiB). */
struct {
	__uint(type, BPF_MAP_TYPE_RINGBUF);
	__uint(max_entries, 16 << 20);
} bw_events SEC(".maps");

/* Reserve/output failures, one slot per CPU so the hot path never contends. */
struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, __u64);
} bw_lost SEC(".maps");

/* Wake the consumer only once this many bytes are waiting (0: every record).
 * The consumer also polls with a timeout, which bounds the added delay. */
const volatile __u64 bw_wakeup_bytes = 0;

static __always_inline void bw_count_lost(void)
{
	__u32 zero = 0;
	__u64 *n = bpf_map_lookup_elem(&bw_lost, &zero);

	if (n)
		*n += 1;
}

/* With bw_wakeup_bytes, a record forces a wake-up only when the bytes queued
 * cross a multiple of it: once per that many bytes. Forcing it on every record
 * past the first threshold costs the producer an irq_work each (~0.7 us), for a
 * consumer that is already awake or sleeping between paced reads: it doubled
 * the file sensor's cost per syscall. A crossing missed in a race between CPUs
 * is caught at the next multiple, and the consumer's timeout bounds the rest. */
static __always_inline __u64 bw_submit_flags(__u64 size)
{
	__u64 avail, before;

	if (!bw_wakeup_bytes)
		return 0;
	avail = bpf_ringbuf_query(&bw_events, BPF_RB_AVAIL_DATA);
	size += 8; /* the record's header */
	before = avail > size ? avail - size : 0;
	if (avail / bw_wakeup_bytes != before / bw_wakeup_bytes)
		return BPF_RB_FORCE_WAKEUP;
	return BPF_RB_NO_WAKEUP;
}

static __always_inline void *bw_reserve(__u64 size)
{
	void *e = bpf_ringbuf_reserve(&bw_events, size, 0);

	if (!e)
		bw_count_lost();
	return e;
}

static __always_inline void bw_submit(void *e, __u64 size)
{
	bpf_ringbuf_submit(e, bw_submit_flags(size));
}

static __always_inline void bw_output(void *data, __u64 size)
{
	if (bpf_ringbuf_output(&bw_events, data, size, bw_submit_flags(size)))
		bw_count_lost();
}

/* Variable-size records are padded to a multiple of BW_SIZE_CLASS bytes when
 * the buffer holds it: records of similar length then have equal sizes, and
 * the consumer decodes a run of equal-size records as columns at once instead
 * of one by one (consumers read the lengths inside a record, never its size). */
#define BW_SIZE_CLASS 64

static __always_inline void bw_output_var(void *data, __u64 size, __u64 cap)
{
	__u64 padded = (size + BW_SIZE_CLASS - 1) & ~(__u64)(BW_SIZE_CLASS - 1);

	bw_output(data, padded <= cap ? padded : size);
}

/* Before Linux 6.16 sched_process_exit does not say whether the whole thread
 * group died: it did when no live thread is left, but the last threads of a
 * process may all see that, so only the first to claim the process in `seen`
 * (an LRU hash of u64 -> u8, one per object) is its exit. */
static __always_inline int bw_group_dead_old(struct task_struct *task, void *seen)
{
	if (BPF_CORE_READ(task, signal, live.counter) != 0)
		return 0;
	__u64 key = ((__u64)BPF_CORE_READ(task, tgid) << 32) ^ BPF_CORE_READ(task, group_leader, start_boottime);
	__u8 one = 1;

	return bpf_map_update_elem(seen, &key, &one, BPF_NOEXIST) == 0;
}

/* Fields of a task read with plain loads. `task` must be a BTF pointer (from
 * bpf_get_current_task_btf() or a tp_btf argument): the verifier makes each
 * load a guarded one that reads 0 on a fault, as a failed helper read does,
 * at a fraction of the cost of a bpf_probe_read_kernel() call. Reading tgid,
 * pid, uid and comm this way took ~150 ns off every record. */
static __always_inline __u32 bw_task_uid(struct task_struct *task)
{
	return task->cred->uid.val;
}

/* The task's comm: the bytes after its NUL are whatever the kernel's buffer
 * held, so decoders read up to the NUL (and map keys, which must be
 * NUL-padded, are read with BPF_CORE_READ_STR_INTO into a zeroed buffer). */
static __always_inline void bw_task_comm(char *dst, struct task_struct *task)
{
	__builtin_memcpy(dst, task->comm, BW_COMM_LEN);
}

/* The task's cgroup (v2) id with plain loads, as bpf_get_current_cgroup_id()
 * gives it for the current task, ~38 ns less a record. The verifier's walk
 * through css_set, cgroup and kernfs_node costs load time at each place it
 * is inlined, though (dns.bpf.o 116 -> 172 ms), so only the file sensor's
 * operation records, the most numerous, use it; the others call the helper,
 * and `trace` with the default sensors starts within 0.35 s. */
static __always_inline __u64 bw_task_cgroup_id(struct task_struct *task)
{
	return task->cgroups->dfl_cgrp->kn->id;
}

static __always_inline void bw_fill_hdr(struct bw_hdr *h, __u32 type, struct task_struct *task)
{
	h->ts_boot_ns = bpf_ktime_get_boot_ns();
	h->type = type;
	h->pid = task->tgid;
	h->tid = task->pid;
	h->cpu = bpf_get_smp_processor_id();
}

/* ---- syscall arguments and file descriptors ---------------------------- */

/* Argument i of a syscall from its saved user registers; valid at sys_exit
 * too (the kernel leaves them in place; arm64 keeps the first in orig_x0).
 * regs is the tracepoint's trusted BTF pointer: plain loads, no helper calls. */
static __always_inline __u64 bw_syscall_arg(struct pt_regs *regs, int i)
{
#if defined(__TARGET_ARCH_x86)
	switch (i) {
	case 0: return regs->di;
	case 1: return regs->si;
	case 2: return regs->dx;
	case 3: return regs->r10;
	case 4: return regs->r8;
	case 5: return regs->r9;
	}
#elif defined(__TARGET_ARCH_arm64)
	if (i == 0)
		return regs->orig_x0;
	if (i > 0 && i < 6)
		return regs->regs[i];
#endif
	return 0;
}

static __always_inline long bw_syscall_nr(struct pt_regs *regs)
{
#if defined(__TARGET_ARCH_x86)
	return regs->orig_ax;
#elif defined(__TARGET_ARCH_arm64)
	return regs->syscallno;
#else
	return -1;
#endif
}

/* The struct file behind fd in task's table, or NULL. task must be a trusted
 * BTF pointer (bpf_get_current_task_btf()); only the indexed read needs a helper. */
static __always_inline struct file *bw_fd_file(struct task_struct *task, long fd)
{
	struct fdtable *fdt = task->files->fdt;
	struct file *f = 0;

	if (fd < 0 || fd >= fdt->max_fds)
		return 0;
	bpf_probe_read_kernel(&f, sizeof(f), &fdt->fd[fd]);
	return f;
}

/* ---- path reconstruction ------------------------------------------------ */

#define BW_PATH_MAX 4096        /* bytes of a path we keep, with its NUL */
#define BW_PATH_DEPTH 128       /* components walked at most */
#define BW_NAME_MAX 255

/* Scratch: the path is built backwards from the end of the first half; the
 * second half is slack so masked offsets always stay inside the value. */
struct bw_path_buf {
	char data[BW_PATH_MAX * 2];
};

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct bw_path_buf);
} bw_path_scratch SEC(".maps");

struct bw_walk_ctx {
	struct dentry *dentry;
	struct dentry *mnt_root; /* of vfsmnt: read once per mount, not per component */
	struct vfsmount *vfsmnt;
	struct mount *mnt;
	char *buf;
	__u32 pos;       /* start of the path built so far */
	__u32 truncated;
	__u32 done;      /* reached the root (else the walk ran out of steps) */
};

/* Puts "/NAME" in front of the path built so far; 1 (and truncated) if it
 * does not fit. */
static __always_inline int bw_prepend_name(struct bw_walk_ctx *c, const struct qstr *name)
{
	__u32 len = name->len & BW_NAME_MAX;

	if (len + 1 > c->pos) {
		c->truncated = 1;
		return 1;
	}
	__u32 start = (c->pos - len - 1) & (BW_PATH_MAX - 1);

	c->buf[start] = '/';
	bpf_probe_read_kernel(c->buf + ((start + 1) & (BW_PATH_MAX - 1)), len, name->name);
	c->pos = start;
	return 0;
}

static long bw_walk_step(__u64 idx, struct bw_walk_ctx *c)
{
	/* locals: CO-RE must not relocate the fields of our own context */
	struct dentry *d = c->dentry;
	struct mount *mnt = c->mnt;
	struct dentry *mnt_root = c->mnt_root;
	struct dentry *parent;
	struct qstr name;
	__u32 poff = bpf_core_field_offset(struct dentry, d_parent);

	if (bpf_core_field_offset(struct dentry, d_name) == poff + 8) {
		/* d_parent and d_name side by side: one read for both */
		struct { struct dentry *parent; struct qstr name; } pn;

		bpf_probe_read_kernel(&pn, sizeof(pn), (void *)d + poff);
		parent = pn.parent;
		name = pn.name;
	} else {
		parent = BPF_CORE_READ(d, d_parent);
		name = BPF_CORE_READ(d, d_name);
	}

	if (d == mnt_root || d == parent) {
		struct mount *mnt_parent = BPF_CORE_READ(mnt, mnt_parent);

		if (d != mnt_root || mnt == mnt_parent) {
			c->done = 1; /* reached the root of the mount tree, or see below */
			return 1;
		}
		/* climb from this mount's root to where it is mounted */
		struct vfsmount *up = (struct vfsmount *)((void *)mnt_parent +
							  bpf_core_field_offset(struct mount, mnt));

		c->dentry = BPF_CORE_READ(mnt, mnt_mountpoint);
		c->mnt = mnt_parent;
		c->vfsmnt = up;
		c->mnt_root = BPF_CORE_READ(up, mnt_root);
		return 0;
	}

	if (bw_prepend_name(c, &name))
		return 1;
	c->dentry = parent;
	return 0;
}

#define BW_PATH_TRUNCATED 1
#define BW_PATH_PSEUDO 2

/* Writes the absolute path of `path` into the per-CPU scratch and returns a
 * pointer to its first byte; *len gets its length with the NUL (0 on error),
 * *how BW_PATH_TRUNCATED and BW_PATH_PSEUDO bits. An anonymous file's name is
 * written only with `pseudo` (a constant: callers that never meet one, or do
 * not flag it, pay no verifier states for it). */
static __always_inline char *bw_resolve_path(const struct path *path, __u32 *len, __u32 *how, int pseudo)
{
	__u32 zero = 0;
	struct bw_path_buf *pb = bpf_map_lookup_elem(&bw_path_scratch, &zero);
	struct bw_walk_ctx c = {};

	*len = 0;
	if (!pb)
		return 0;
	c.dentry = BPF_CORE_READ(path, dentry);
	c.vfsmnt = BPF_CORE_READ(path, mnt);
	if (!c.dentry || !c.vfsmnt)
		return 0;
	c.mnt = (struct mount *)((void *)c.vfsmnt - bpf_core_field_offset(struct mount, mnt));
	struct vfsmount *vm = c.vfsmnt;

	c.mnt_root = BPF_CORE_READ(vm, mnt_root);
	c.buf = pb->data;
	c.pos = BW_PATH_MAX - 1;
	pb->data[BW_PATH_MAX - 1] = 0;
	bpf_loop(BW_PATH_DEPTH, bw_walk_step, &c, 0);
	/* the walk stopped at a dentry that is its own parent without being the
	 * mount's root: it has no place in the tree (memfd, anonymous files), and
	 * its name is the whole path, as in the kernel's d_path ("/memfd:NAME").
	 * Decided here, not in the walk: a flag set there triples verifier time. */
	int anon = c.done && c.dentry != c.mnt_root;

	if (pseudo && anon) {
		struct dentry *d = c.dentry;
		struct qstr name = BPF_CORE_READ(d, d_name);

		bw_prepend_name(&c, &name);
	}
	if (!c.done)
		c.truncated = 1; /* deeper than BW_PATH_DEPTH, or the buffer filled */
	if (c.pos == BW_PATH_MAX - 1) { /* the root itself */
		c.pos = BW_PATH_MAX - 2;
		pb->data[BW_PATH_MAX - 2] = '/';
	}
	*how = (c.truncated ? BW_PATH_TRUNCATED : 0) | (anon ? BW_PATH_PSEUDO : 0);
	*len = BW_PATH_MAX - c.pos;
	return pb->data + (c.pos & (BW_PATH_MAX - 1));
}

/* bw_resolve_path as a global function: the verifier checks it once, not
 * once per caller (an exec resolves three paths; inlined, they made
 * bw_proc_exec 73k verified instructions). Scalars in and out, as global
 * functions need: the path's address, and (length | how << 16), the path
 * itself left at the end of this CPU's bw_path_scratch. */
__noinline int bw_path_to_scratch(__u64 path_addr, int pseudo)
{
	__u32 len = 0, how = 0;
	char *src = bw_resolve_path((const struct path *)path_addr, &len, &how, pseudo != 0);

	if (!src)
		return 0;
	return (int)((len & 0xffff) | how << 16);
}

/* Copies the absolute path of `path` into data at *off (masked: a record's
 * data area must have room for 4 * BW_PATH_MAX bytes past it) and moves *off
 * past it. Returns its length with the NUL (0 on failure); sets trunc_flag in
 * *flags when the path was too long or deep to walk whole, pseudo_flag when it
 * names an anonymous file (memfd). */
static __always_inline __u16 bw_put_path(__u8 *data, __u32 *off, const struct path *path,
					 __u16 *flags, __u16 trunc_flag, __u16 pseudo_flag)
{
	__u32 zero = 0;
	__u64 addr = 0;

	/* a global function takes scalars: a trusted BTF pointer (task->fs->pwd)
	 * is not one until it is read back as plain bytes */
	bpf_probe_read_kernel(&addr, sizeof(addr), &path);
	int r = bw_path_to_scratch(addr, pseudo_flag != 0);
	__u32 len = r & 0xffff, how = (__u32)r >> 16;
	struct bw_path_buf *pb = bpf_map_lookup_elem(&bw_path_scratch, &zero);

	if (!pb || !len || len > BW_PATH_MAX)
		return 0;
	char *src = pb->data + ((BW_PATH_MAX - len) & (BW_PATH_MAX - 1));
	if (how & BW_PATH_TRUNCATED)
		*flags |= trunc_flag;
	if (how & BW_PATH_PSEUDO)
		*flags |= pseudo_flag;
	len &= (2 * BW_PATH_MAX - 1);
	if (len > BW_PATH_MAX)
		len = BW_PATH_MAX;
	__u32 o = *off & (4 * BW_PATH_MAX - 1);
	if (bpf_probe_read_kernel(data + o, len, src))
		return 0;
	*off = o + len;
	return len;
}

#endif
