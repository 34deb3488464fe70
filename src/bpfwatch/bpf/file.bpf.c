// SPDX-License-Identifier: GPL-2.0
/* File sensor: file.open and the other file.* operations from sys_exit with
 * arguments read from the saved registers, and file.io totals aggregated per
 * (process, file) in the kernel, emitted at close or process exit. */
#include "bw_filter.bpf.h"
#include "file.h"

BW_LAYOUT(struct bw_file_event, file_event);
BW_LAYOUT(struct bw_fileio_event, fileio_event);
BW_LAYOUT(struct bw_fileio_path_event, fileio_path_event);
BW_LAYOUT(struct bw_sysdesc, sysdesc);
BW_LAYOUT(enum bw_file_kind, file_kind);

#define BW_AT_FDCWD -100
#define BW_S_IFMT 0170000
#define BW_S_IFREG 0100000
#define BW_PREFIX_MAX 256
#define BW_PREFIXES 16

const volatile __u32 emit_kinds = 0xffffffff; /* bit (1 << kind) */
const volatile __u32 failed_only = 0;
const volatile __u32 open_write_only = 0; /* opens only with write intent (the security rules) */
const volatile __u32 n_prefixes = 0;
const volatile __u32 nr_close = 3;
const volatile __s32 nr_dup2 = 33;  /* -1 where the architecture has none */
const volatile __s32 nr_dup3 = 292;

struct bw_prefix {
	__u32 len;
	char p[BW_PREFIX_MAX];
};

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, BW_PREFIXES);
	__type(key, __u32);
	__type(value, struct bw_prefix);
} bw_prefixes SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 512);
	__type(key, __u32);
	__type(value, struct bw_sysdesc);
} bw_sysdesc SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 16384);
	__type(key, struct bw_fileio_key);
	__type(value, struct bw_fileio_stats);
} bw_fileio SEC(".maps");

/* Entries each process has in bw_fileio: at exit the table is scanned only
 * for processes that left some (a full scan costs ~200 us). */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 16384);
	__type(key, __u32);
	__type(value, __s64);
} bw_fileio_owners SEC(".maps");

static __always_inline void owner_add(__u32 tgid, __s64 n)
{
	__s64 *c = bpf_map_lookup_elem(&bw_fileio_owners, &tgid);

	if (c) {
		__sync_fetch_and_add(c, n);
	} else if (n > 0) {
		bpf_map_update_elem(&bw_fileio_owners, &tgid, &n, BPF_NOEXIST);
	}
}

/* Inserts a fresh entry; counts it for its process. */
static __always_inline int fileio_insert(struct bw_fileio_key *key, struct bw_fileio_stats *st)
{
	if (bpf_map_update_elem(&bw_fileio, key, st, BPF_NOEXIST))
		return -1;
	owner_add(key->tgid, 1);
	return 0;
}

static __always_inline void fileio_delete(struct bw_fileio_key *key)
{
	if (bpf_map_delete_elem(&bw_fileio, key) == 0)
		owner_add(key->tgid, -1);
}

#define BW_FILE_DATA (4 * BW_PATH_MAX)
struct bw_file_buf {
	__u8 raw[sizeof(struct bw_file_event) + 2 * BW_FILE_DATA];
};

/* One per CPU (indexed by CPU: too big for a per-CPU map); sized before load. */
struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct bw_file_buf);
} bw_file_scratch SEC(".maps");

static __always_inline struct bw_file_buf *file_scratch(void)
{
	__u32 cpu = bpf_get_smp_processor_id();

	return bpf_map_lookup_elem(&bw_file_scratch, &cpu);
}

/* ---- path prefix filter --------------------------------------------------- */

struct cmp_ctx {
	const char *path;
	const char *prefix;
	int differ;
};

static long cmp_byte(__u64 i, struct cmp_ctx *c)
{
	char a = 0, b = 0;

	bpf_probe_read_kernel(&a, 1, c->path + (i & (BW_PATH_MAX - 1)));
	bpf_probe_read_kernel(&b, 1, c->prefix + (i & (BW_PREFIX_MAX - 1)));
	if (a != b) {
		c->differ = 1;
		return 1;
	}
	return 0;
}

/* Does the absolute path (len bytes with its NUL) start with a prefix? */
static __always_inline int path_allowed(const char *path, __u32 len)
{
	if (!n_prefixes)
		return 1;
	for (__u32 i = 0; i < BW_PREFIXES; i++) {
		if (i >= n_prefixes)
			break;
		__u32 k = i;
		struct bw_prefix *pf = bpf_map_lookup_elem(&bw_prefixes, &k);

		if (!pf || pf->len == 0 || pf->len > BW_PREFIX_MAX || pf->len + 1 > len)
			continue;
		struct cmp_ctx c = { .path = path, .prefix = pf->p, .differ = 0 };

		bpf_loop(pf->len, cmp_byte, &c, 0);
		if (!c.differ)
			return 1;
	}
	return 0;
}

/* ---- record assembly -------------------------------------------------------- */

/* The kernel's path of `path` into data at *off; *allowed says whether it
 * passes the prefix filter. */
static __always_inline __u16 put_kpath(__u8 *data, __u32 *off, const struct path *path, int *allowed,
				       __u16 *rflags, __u16 trunc_flag)
{
	__u32 start = *off & (BW_FILE_DATA - 1);  /* where bw_put_path puts it */
	__u16 len = bw_put_path(data, off, path, rflags, trunc_flag, 0);

	if (allowed && len)
		*allowed = path_allowed((const char *)data + start, len);
	return len;
}

/* Copies a user string; returns its length with the NUL (0 on fault). */
static __always_inline __u16 put_ustr(__u8 *data, __u32 *off, const char *ustr)
{
	__u32 o = *off & (BW_FILE_DATA - 1);
	long n = bpf_probe_read_user_str(data + o, BW_PATH_MAX, ustr);

	if (n < 0)
		return 0;
	if (n == 0) {  /* "" on Linux 6.1 (6.18 counts its NUL): still an empty string, not a fault */
		data[o] = 0;
		n = 1;
	}
	*off = o + n;
	return n;
}

static __always_inline const struct path *dir_path(struct task_struct *task, long dirfd)
{
	if (dirfd == BW_AT_FDCWD) {
		struct fs_struct *fs = BPF_CORE_READ(task, fs);

		return &fs->pwd;
	}
	struct file *f = bw_fd_file(task, dirfd);

	return f ? &f->f_path : 0;
}

/* path (arg) + its dir when relative; returns the path's length */
static __always_inline void put_user_path(__u8 *data, __u32 *off, struct task_struct *task,
					  struct pt_regs *regs, __s8 path_arg, __s8 dirfd_arg,
					  __u16 *plen, __u16 *dlen, __u16 *rflags, __u16 trunc_flag)
{
	const char *ustr = (const char *)bw_syscall_arg(regs, path_arg);
	__u32 start = *off & (BW_FILE_DATA - 1);
	char first = 0;

	*plen = put_ustr(data, off, ustr);
	*dlen = 0;
	if (!*plen || dirfd_arg == BW_DIR_NONE)
		return;
	bpf_probe_read_kernel(&first, 1, data + start);
	if (first == '/')
		return;
	long dirfd = dirfd_arg == BW_DIR_CWD ? BW_AT_FDCWD : (int)bw_syscall_arg(regs, dirfd_arg);
	const struct path *dp = dir_path(task, dirfd);

	if (dp)
		*dlen = put_kpath(data, off, dp, 0, rflags, trunc_flag);
}

/* ---- file.io ---------------------------------------------------------------- */

static __always_inline void emit_io(struct bw_fileio_key *key, struct bw_fileio_stats *st, __u32 closed,
				    struct task_struct *task)
{
	struct bw_fileio_event *e;

	if (st->ignored || !(st->reads | st->writes) ||
	    !(emit_kinds & (1u << BW_FILE_READ | 1u << BW_FILE_WRITE)))
		return;
	e = bw_reserve(sizeof(*e));
	if (!e)
		return;
	bw_fill_hdr(&e->hdr, BW_EV_FILE_IO, task);
	e->hdr.pid = key->tgid;
	e->key = *key;
	e->st = *st;
	e->closed = closed;
	e->pad2 = 0;
	bw_submit(e, sizeof(*e));
}

static __always_inline void count_io(struct task_struct *task, __u32 tgid, long fd, long bytes, int write)
{
	struct file *f = bw_fd_file(task, fd);
	struct bw_fileio_key key = { .tgid = tgid };
	struct bw_fileio_stats *st;

	if (!f)
		return;
	umode_t mode = BPF_CORE_READ(f, f_inode, i_mode);
	if ((mode & BW_S_IFMT) != BW_S_IFREG)
		return; /* sockets, pipes, ttys: not file I/O */
	/* the process filter after the file's type: most reads and writes of a
	 * busy host are on sockets and pipes, and the filter may be a hash lookup */
	if (!matches(task))
		return;
	key.file = (__u64)f;
	st = bpf_map_lookup_elem(&bw_fileio, &key);
	if (!st) {
		struct bw_fileio_stats fresh = {};
		struct bw_file_buf *b = file_scratch();

		if (!b)
			return;
		struct bw_fileio_path_event *pe = (void *)b->raw;
		__u8 *data = b->raw + sizeof(*pe);
		__u32 off = 0;
		__u16 rflags = 0;
		int allowed = 1;

		fresh.first_ns = bpf_ktime_get_boot_ns();
		fresh.uid = bw_task_uid(task);
		bw_task_comm(fresh.comm, task);
		pe->path_len = put_kpath(data, &off, &f->f_path, &allowed, &rflags, 1);
		fresh.ignored = !allowed;
		if (fileio_insert(&key, &fresh) && !bpf_map_lookup_elem(&bw_fileio, &key)) {
			bw_count_lost(); /* table full */
			return;
		}
		if (allowed) {
			bw_fill_hdr(&pe->hdr, BW_EV_FILE_IOPATH, task);
			pe->key = key;
			pe->truncated = rflags;
			pe->path_pad = 0;
			__u64 total = sizeof(*pe) + (off & (2 * BW_FILE_DATA - 1));
			if (total <= sizeof(*b))
				bw_output_var(pe, total, sizeof(*b));
		}
		st = bpf_map_lookup_elem(&bw_fileio, &key);
		if (!st)
			return;
	}
	if (st->ignored)
		return;
	if (write) {
		__sync_fetch_and_add(&st->writes, 1);
		__sync_fetch_and_add(&st->write_bytes, bytes);
	} else {
		__sync_fetch_and_add(&st->reads, 1);
		__sync_fetch_and_add(&st->read_bytes, bytes);
	}
	st->last_ns = bpf_ktime_get_boot_ns();
}

/* ---- the programs ------------------------------------------------------------- */

SEC("tp_btf/sys_exit")
int BW_CHAINED(sys_exit, bw_file_exit, struct pt_regs *regs, long ret)
{
	__u32 nr = bw_syscall_nr(regs);
	struct bw_sysdesc *d = bpf_map_lookup_elem(&bw_sysdesc, &nr);

	if (!d || !d->kind || d->kind == BW_FILE_CLOSE)
		return 0;
	struct task_struct *task = (struct task_struct *)bpf_get_current_task_btf();
	__u32 tgid = task->tgid;

	if (!in_scope(tgid))
		return 0;
	if (d->kind == BW_FILE_READ || d->kind == BW_FILE_WRITE) {
		if (ret > 0 && d->fd >= 0 && (emit_kinds & (1u << BW_FILE_READ | 1u << BW_FILE_WRITE)))
			count_io(task, tgid, (int)bw_syscall_arg(regs, d->fd), ret, d->kind == BW_FILE_WRITE);
		return 0;
	}
	if (!(emit_kinds & (1u << d->kind)) || (failed_only && ret >= 0) || !matches(task))
		return 0;

	struct bw_file_buf *b = file_scratch();
	if (!b)
		return 0;
	struct bw_file_event *e = (void *)b->raw;
	__u8 *data = b->raw + sizeof(*e);
	__u32 off = 0;
	int allowed = 1;

	e->ret = ret;
	e->kind = d->kind;
	e->nr = nr;
	e->rflags = 0;
	e->pad = 0;
	e->flags = d->fixed_flags;
	e->mode = 0;
	e->length = 0;
	e->owner_uid = e->owner_gid = (__u32)-1;
	if (d->flags >= 0)
		e->flags |= (__u32)bw_syscall_arg(regs, d->flags);
	if (d->mode >= 0)
		e->mode = (__u32)bw_syscall_arg(regs, d->mode);
	if (d->flags == BW_ARG_HOW) {
		__u64 how[2] = {};

		bpf_probe_read_user(&how, sizeof(how), (void *)bw_syscall_arg(regs, 2));
		e->flags = how[0];
		e->mode = how[1];
	}
	/* O_WRONLY | O_RDWR | O_CREAT | O_TRUNC */
	if (open_write_only && d->kind == BW_FILE_OPEN && !(e->flags & 0x243))
		return 0;
	if (d->owner >= 0) {
		e->owner_uid = (__u32)bw_syscall_arg(regs, d->owner);
		e->owner_gid = (__u32)bw_syscall_arg(regs, d->owner + 1);
	}
	if (d->length >= 0)
		e->length = bw_syscall_arg(regs, d->length);

	e->path1_len = e->dir1_len = e->path2_len = e->dir2_len = 0;
	e->file = 0;
	if (d->kind == BW_FILE_OPEN && ret >= 0) {
		/* the file itself says where it is: absolute, symlinks resolved */
		struct file *f = bw_fd_file(task, ret);

		if (f) {
			e->path1_len = put_kpath(data, &off, &f->f_path, &allowed, &e->rflags, BW_FILE_PATH1_TRUNC);
			e->rflags |= BW_FILE_PATH1_RESOLVED;
			e->file = (__u64)f;
		}
	} else if (d->fd >= 0 && d->path1 < 0) {
		struct file *f = bw_fd_file(task, (int)bw_syscall_arg(regs, d->fd));
		struct bw_fileio_key fkey = { .tgid = tgid, .file = (__u64)f };
		struct bw_fileio_stats *known = f ? bpf_map_lookup_elem(&bw_fileio, &fkey) : 0;

		if (known) {
			/* opened under our eyes: Python has its path; no walk */
			if (known->ignored)
				return 0;
			e->file = (__u64)f;
			e->rflags |= BW_FILE_PATH1_BY_KEY | BW_FILE_PATH1_RESOLVED;
		} else if (f) {
			e->path1_len = put_kpath(data, &off, &f->f_path, &allowed, &e->rflags, BW_FILE_PATH1_TRUNC);
			e->rflags |= BW_FILE_PATH1_RESOLVED;
		}
	} else if (d->path1 >= 0) {
		put_user_path(data, &off, task, regs, d->path1, d->dirfd1, &e->path1_len, &e->dir1_len,
			      &e->rflags, BW_FILE_PATH1_TRUNC);
	}
	if (!allowed)
		return 0;
	if (d->path2 >= 0)
		put_user_path(data, &off, task, regs, d->path2, d->dirfd2, &e->path2_len, &e->dir2_len,
			      &e->rflags, BW_FILE_PATH2_TRUNC);

	bw_fill_hdr(&e->hdr, BW_EV_FILE_OP, task);
	e->cgroup_id = bw_task_cgroup_id(task);
	e->uid = bw_task_uid(task);
	bw_task_comm(e->comm, task);
	__u64 total = sizeof(*e) + (off & (2 * BW_FILE_DATA - 1));
	if (total > sizeof(*b))
		return 0;
	if (e->file && d->kind == BW_FILE_OPEN && (emit_kinds & (1u << BW_FILE_READ | 1u << BW_FILE_WRITE))) {
		/* this record tells Python the path behind the key: file.io needs no
		 * path record of its own (a third fewer records for open/use/close) */
		struct bw_fileio_key key = { .tgid = tgid, .file = e->file };
		struct bw_fileio_stats fresh = { .uid = e->uid };

		fresh.first_ns = e->hdr.ts_boot_ns;
		__builtin_memcpy(fresh.comm, e->comm, sizeof(fresh.comm));
		fileio_insert(&key, &fresh);
	}
	bw_output_var(e, total, sizeof(*b));
	return 0;
}

/* close(), and dup2/dup3 onto an open fd (which closes it): the file is still
 * there at entry; its totals go out now */
SEC("tp_btf/sys_enter")
int BW_CHAINED(sys_enter, bw_file_close, struct pt_regs *regs, long id)
{
	int arg;

	if (id == nr_close)
		arg = 0;
	else if (id == nr_dup2 || id == nr_dup3)
		arg = 1;
	else
		return 0;
	struct task_struct *task = (struct task_struct *)bpf_get_current_task_btf();
	__u32 tgid = task->tgid;
	struct file *f = bw_fd_file(task, (int)bw_syscall_arg(regs, arg));
	struct bw_fileio_key key = { .tgid = tgid, .file = (__u64)f };
	struct bw_fileio_stats *st;

	if (!f)
		return 0;
	st = bpf_map_lookup_elem(&bw_fileio, &key);
	if (!st)
		return 0;
	emit_io(&key, st, 1, task);
	fileio_delete(&key);
	return 0;
}

struct flush_ctx {
	__u32 tgid;
	__s64 left;
	struct task_struct *task;
};

static long flush_one(struct bpf_map *map, struct bw_fileio_key *key, struct bw_fileio_stats *st,
		      struct flush_ctx *c)
{
	if (key->tgid != c->tgid)
		return 0;
	emit_io(key, st, 0, c->task);
	bpf_map_delete_elem(map, key);
	c->left--;
	return c->left <= 0;  /* stop once this process's entries are all out */
}

/* process exit: its files are still open here (exit_files comes later) */
SEC("tp_btf/sched_process_exit")
int BPF_PROG(bw_file_proc_exit, struct task_struct *task)
{
	if (BPF_CORE_READ(task, signal, live.counter) != 0)
		return 0; /* not the last thread */
	__u32 tgid = BPF_CORE_READ(task, tgid);
	__s64 *owned = bpf_map_lookup_elem(&bw_fileio_owners, &tgid);

	if (!owned)
		return 0;
	struct flush_ctx c = { .tgid = tgid, .left = *owned, .task = task };

	bpf_map_delete_elem(&bw_fileio_owners, &tgid);
	if (c.left > 0)
		bpf_for_each_map_elem(&bw_fileio, flush_one, &c, 0);
	return 0;
}
