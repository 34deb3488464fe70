/* SPDX-License-Identifier: GPL-2.0 */
/* Record layouts of the security sensor. */
#ifndef BW_SECURITY_H
#define BW_SECURITY_H

#include "bw_common.h"

#define BW_SEC_NR_MAX 512    /* syscall numbers watched: 0 .. BW_SEC_NR_MAX-1 */
#define BW_SEC_STR 256       /* bytes of each string argument kept */

/* What a watched syscall is (bw_sec_kinds[nr]); 0 = not watched. */
enum bw_sec_kind {
	BW_SEC_CRED = 1,       /* setuid, setresuid, setgroups, capset, ... */
	BW_SEC_PTRACE = 2,
	BW_SEC_VM_WRITE = 3,   /* process_vm_writev */
	BW_SEC_BPF = 4,        /* bpf(BPF_PROG_LOAD) */
	BW_SEC_MOUNT = 5,
	BW_SEC_UMOUNT = 6,
	BW_SEC_SETNS = 7,
	BW_SEC_UNSHARE = 8,
	BW_SEC_MODULE = 9,     /* init_module, finit_module, delete_module */
	BW_SEC_EXEC = 10,      /* execve, execveat: credentials before, compared at exec */
};

/* bw_sec_exec_event.flags: what is suspect about the executed file */
#define BW_SEC_X_MEMFD      (1 << 0) /* a memfd: fileless execution */
#define BW_SEC_X_DELETED    (1 << 1) /* unlinked before or while it ran */
#define BW_SEC_X_WW_DIR     (1 << 2) /* its directory is world-writable */
#define BW_SEC_X_SETUID     (1 << 3) /* set-user-ID file */
#define BW_SEC_X_SETGID     (1 << 4) /* set-group-ID file */
#define BW_SEC_X_CRED       (1 << 5) /* credentials or capabilities changed */

struct bw_sec_creds {
	__u32 uid;
	__u32 euid;
	__u32 suid;
	__u32 fsuid;
	__u32 gid;
	__u32 egid;
	__u64 cap_effective;
	__u64 cap_permitted;
};

/* Records carry two sets of credentials with prefixed names (the decoder
 * flattens records, so field names must be unique). */
#define BW_SEC_CREDS(p) \
	__u32 p##uid; __u32 p##euid; __u32 p##suid; __u32 p##fsuid; \
	__u32 p##gid; __u32 p##egid; __u64 p##cap_effective; __u64 p##cap_permitted

/* A watched syscall, at its return; strings follow: str1_len bytes, then str2_len. */
struct bw_sec_event {
	struct bw_hdr hdr;
	__u64 cgroup_id;
	__s64 ret;
	__u64 arg0, arg1, arg2, arg3, arg4, arg5; /* the syscall's arguments */
	BW_SEC_CREDS(old_);   /* at entry */
	BW_SEC_CREDS(new_);   /* at return */
	__u32 kind;               /* enum bw_sec_kind */
	__u32 nr;
	__u32 ppid;
	__u32 aux;                /* bpf: the program type being loaded */
	__u32 aux2;               /* bpf: its instruction count */
	__u16 str1_len;
	__u16 str2_len;
	__u32 pad;
	char comm[BW_COMM_LEN];
};

/* bw_sec_kinds[nr]: what the syscall is, and which arguments are user strings (-1: none) */
struct bw_sec_desc {
	__u8 kind;
	__s8 str1;
	__s8 str2;
	__u8 pad;
};

/* An exec that changed credentials or ran a suspect file; the file name follows. */
struct bw_sec_exec_event {
	struct bw_hdr hdr;
	__u64 cgroup_id;
	BW_SEC_CREDS(old_);
	BW_SEC_CREDS(new_);
	__u32 flags;
	__u32 ppid;
	__u32 file_uid;
	__u32 file_mode;
	__u32 dir_mode;
	__u16 name_len;
	__u16 pad;
	char comm[BW_COMM_LEN];
};

#endif
