// SPDX-License-Identifier: GPL-2.0
/* Security sensor: credential changes, ptrace, process_vm_writev, BPF loads,
 * mount/umount, setns/unshare and module syscalls (at sys_enter, reported at
 * sys_exit with the result and the credentials before and after), and execs
 * that change credentials or run a memfd, deleted or world-writable-directory
 * file (sched_process_exec). Observe only: nothing is blocked. */
#include "bw_filter.bpf.h"
#include "security.h"

BW_LAYOUT(struct bw_sec_event, sec);
BW_LAYOUT(struct bw_sec_exec_event, sec_exec);
BW_LAYOUT(enum bw_sec_kind, sec_kind);

const volatile __u32 self_tgid = 0; /* bpfwatch's own BPF loads are not findings */

#define S_ISUID_ 04000
#define S_ISGID_ 02000
#define S_IWOTH_ 00002
#define BPF_PROG_LOAD_ 5
#define PTRACE_ATTACH_ 16
#define PTRACE_SEIZE_ 0x4206

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, BW_SEC_NR_MAX);
	__type(key, __u32);
	__type(value, struct bw_sec_desc);
} bw_sec_kinds SEC(".maps");

struct bw_sec_pending {
	__u64 args[6];
	struct bw_sec_creds old;
	__u32 nr;
	__u32 kind;
};

struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, 16384);
	__type(key, __u64); /* pid_tgid */
	__type(value, struct bw_sec_pending);
} bw_sec_pending SEC(".maps");

struct bw_sec_buf {
	__u8 raw[sizeof(struct bw_sec_event) + 4 * BW_SEC_STR];
};

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct bw_sec_buf);
} bw_sec_scratch SEC(".maps");

static __always_inline void read_creds(struct task_struct *task, struct bw_sec_creds *c)
{
	const struct cred *cr = BPF_CORE_READ(task, cred);

	c->uid = BPF_CORE_READ(cr, uid.val);
	c->euid = BPF_CORE_READ(cr, euid.val);
	c->suid = BPF_CORE_READ(cr, suid.val);
	c->fsuid = BPF_CORE_READ(cr, fsuid.val);
	c->gid = BPF_CORE_READ(cr, gid.val);
	c->egid = BPF_CORE_READ(cr, egid.val);
	/* kernel_cap_t is one u64 (6.3+) or two u32: 8 bytes either way */
	c->cap_effective = 0;
	c->cap_permitted = 0;
	bpf_core_read(&c->cap_effective, 8, &cr->cap_effective);
	bpf_core_read(&c->cap_permitted, 8, &cr->cap_permitted);
}

/* The watched syscall's description, or NULL for the others (most of them). */
static __always_inline struct bw_sec_desc *watched(__u32 nr)
{
	struct bw_sec_desc *d;

	if (nr >= BW_SEC_NR_MAX)
		return 0;
	d = bpf_map_lookup_elem(&bw_sec_kinds, &nr);
	return d && d->kind ? d : 0;
}

#define BW_PUT_CREDS(e, p, c) do { \
	(e)->p##uid = (c)->uid; (e)->p##euid = (c)->euid; (e)->p##suid = (c)->suid; \
	(e)->p##fsuid = (c)->fsuid; (e)->p##gid = (c)->gid; (e)->p##egid = (c)->egid; \
	(e)->p##cap_effective = (c)->cap_effective; (e)->p##cap_permitted = (c)->cap_permitted; \
} while (0)

static __always_inline int creds_differ(struct bw_sec_creds *a, struct bw_sec_creds *b)
{
	return a->uid != b->uid || a->euid != b->euid || a->suid != b->suid || a->fsuid != b->fsuid ||
	       a->gid != b->gid || a->egid != b->egid || a->cap_effective != b->cap_effective ||
	       a->cap_permitted != b->cap_permitted;
}

SEC("tp_btf/sys_enter")
int BW_CHAINED(sys_enter, bw_sec_enter, struct pt_regs *regs, long id)
{
	__u32 nr = id;
	struct bw_sec_desc *d = watched(nr);

	if (!d)
		return 0;
	__u64 pid_tgid = bpf_get_current_pid_tgid();
	__u32 tgid = pid_tgid >> 32;
	struct task_struct *task = (struct task_struct *)bpf_get_current_task_btf();

	if (!in_scope(tgid) || !matches(task))
		return 0;
	if (d->kind == BW_SEC_BPF && (tgid == self_tgid || bw_syscall_arg(regs, 0) != BPF_PROG_LOAD_))
		return 0;
	if (d->kind == BW_SEC_PTRACE) {
		__u64 req = bw_syscall_arg(regs, 0);
		if (req != PTRACE_ATTACH_ && req != PTRACE_SEIZE_)
			return 0;
	}
	struct bw_sec_pending p = {};
	for (int i = 0; i < 6; i++)
		p.args[i] = bw_syscall_arg(regs, i);
	read_creds(task, &p.old);
	p.nr = nr;
	p.kind = d->kind;
	bpf_map_update_elem(&bw_sec_pending, &pid_tgid, &p, BPF_ANY);
	return 0;
}

static __always_inline __u16 put_user_str(__u8 *data, __u32 off, __u64 uptr)
{
	if (!uptr)
		return 0;
	long n = bpf_probe_read_user_str(data + (off & (2 * BW_SEC_STR - 1)), BW_SEC_STR, (void *)uptr);
	return n > 0 ? n : 0;
}

SEC("tp_btf/sys_exit")
int BW_CHAINED(sys_exit, bw_sec_exit, struct pt_regs *regs, long ret)
{
	/* the array first: most syscalls are not watched, and a hash lookup costs more */
	struct bw_sec_desc *d = watched(bw_syscall_nr(regs));

	if (!d)
		return 0;
	__u64 pid_tgid = bpf_get_current_pid_tgid();
	struct bw_sec_pending *p = bpf_map_lookup_elem(&bw_sec_pending, &pid_tgid);

	if (!p)
		return 0;
	if (p->kind == BW_SEC_EXEC) {
		/* a failed exec (a successful one was reported at sched_process_exec) */
		bpf_map_delete_elem(&bw_sec_pending, &pid_tgid);
		return 0;
	}
	__u32 zero = 0;
	struct bw_sec_buf *b = bpf_map_lookup_elem(&bw_sec_scratch, &zero);
	if (!b) {
		bpf_map_delete_elem(&bw_sec_pending, &pid_tgid);
		return 0;
	}
	struct task_struct *task = (struct task_struct *)bpf_get_current_task_btf();
	struct bw_sec_event *e = (void *)b->raw;
	__u8 *data = b->raw + sizeof(*e);

	bw_fill_hdr(&e->hdr, BW_EV_SEC_SYSCALL, task);
	e->cgroup_id = bpf_get_current_cgroup_id();
	e->ret = ret;
	e->arg0 = p->args[0];
	e->arg1 = p->args[1];
	e->arg2 = p->args[2];
	e->arg3 = p->args[3];
	e->arg4 = p->args[4];
	e->arg5 = p->args[5];
	struct bw_sec_creds now;

	read_creds(task, &now);
	BW_PUT_CREDS(e, old_, &p->old);
	BW_PUT_CREDS(e, new_, &now);
	e->kind = p->kind;
	e->nr = p->nr;
	e->ppid = BPF_CORE_READ(task, real_parent, tgid);
	e->aux = e->aux2 = 0;
	e->pad = 0;
	e->str1_len = e->str2_len = 0;
	BPF_CORE_READ_STR_INTO(&e->comm, task, comm);

	if (e->kind == BW_SEC_BPF) {
		__u64 attr = e->arg1;
		bpf_probe_read_user(&e->aux, 4, (void *)attr);       /* prog_type */
		bpf_probe_read_user(&e->aux2, 4, (void *)(attr + 4)); /* insn_cnt */
		/* union bpf_attr, BPF_PROG_LOAD: prog_name[16] at offset 48 */
		long n = bpf_probe_read_user_str(data, 16, (void *)(attr + 48));
		e->str1_len = n > 0 ? n : 0;
	} else {
		if (d->str1 >= 0 && d->str1 < 6)
			e->str1_len = put_user_str(data, 0, p->args[d->str1 & 7]);
		if (d->str2 >= 0 && d->str2 < 6)
			e->str2_len = put_user_str(data, e->str1_len, p->args[d->str2 & 7]);
	}
	bpf_map_delete_elem(&bw_sec_pending, &pid_tgid);
	__u64 total = sizeof(*e) + ((e->str1_len + e->str2_len) & (4 * BW_SEC_STR - 1));
	if (total > sizeof(*b))
		return 0;
	bw_output(e, total);
	return 0;
}

SEC("tp_btf/sched_process_exec")
int BPF_PROG(bw_sec_exec, struct task_struct *task, pid_t old_pid, struct linux_binprm *bprm)
{
	__u32 tgid = BPF_CORE_READ(task, tgid);
	__u64 key = ((__u64)tgid << 32) | (__u32)old_pid;
	struct bw_sec_pending *p = bpf_map_lookup_elem(&bw_sec_pending, &key);
	struct bw_sec_creds old = {}, new = {};
	__u32 flags = 0;

	if (!in_scope(tgid) || !matches(task))
		return 0;
	read_creds(task, &new);
	if (p) {
		old = p->old;
		bpf_map_delete_elem(&bw_sec_pending, &key);
		if (creds_differ(&old, &new))
			flags |= BW_SEC_X_CRED;
	} else {
		old = new; /* exec started before the sensor: no comparison */
	}
	struct file *f = BPF_CORE_READ(bprm, file);
	struct dentry *dentry = BPF_CORE_READ(f, f_path.dentry);
	struct inode *inode = BPF_CORE_READ(dentry, d_inode);
	__u32 mode = BPF_CORE_READ(inode, i_mode);
	__u32 dmode = BPF_CORE_READ(dentry, d_parent, d_inode, i_mode);
	char name[8] = {};

	bpf_probe_read_kernel(name, 6, BPF_CORE_READ(dentry, d_name.name));
	if (name[0] == 'm' && name[1] == 'e' && name[2] == 'm' && name[3] == 'f' && name[4] == 'd' &&
	    name[5] == ':')
		flags |= BW_SEC_X_MEMFD;
	else if (BPF_CORE_READ(inode, __i_nlink) == 0)
		flags |= BW_SEC_X_DELETED;
	if (dmode & S_IWOTH_)
		flags |= BW_SEC_X_WW_DIR;
	if (mode & S_ISUID_)
		flags |= BW_SEC_X_SETUID;
	if ((mode & S_ISGID_) && (mode & 00010))
		flags |= BW_SEC_X_SETGID;
	if (!(flags & (BW_SEC_X_CRED | BW_SEC_X_MEMFD | BW_SEC_X_DELETED | BW_SEC_X_WW_DIR)))
		return 0;

	__u32 zero = 0;
	struct bw_sec_buf *b = bpf_map_lookup_elem(&bw_sec_scratch, &zero);
	if (!b)
		return 0;
	struct bw_sec_exec_event *e = (void *)b->raw;
	__u8 *data = b->raw + sizeof(*e);

	bw_fill_hdr(&e->hdr, BW_EV_SEC_EXEC, task);
	e->cgroup_id = bpf_get_current_cgroup_id();
	BW_PUT_CREDS(e, old_, &old);
	BW_PUT_CREDS(e, new_, &new);
	e->flags = flags;
	e->ppid = BPF_CORE_READ(task, real_parent, tgid);
	e->file_uid = BPF_CORE_READ(inode, i_uid.val);
	e->file_mode = mode;
	e->dir_mode = dmode;
	e->pad = 0;
	BPF_CORE_READ_STR_INTO(&e->comm, task, comm);
	long n = bpf_probe_read_kernel_str(data, BW_SEC_STR, BPF_CORE_READ(bprm, filename));
	e->name_len = n > 0 ? n : 0;
	__u64 total = sizeof(*e) + (e->name_len & (2 * BW_SEC_STR - 1));
	if (total > sizeof(*b))
		return 0;
	bw_output(e, total);
	return 0;
}
