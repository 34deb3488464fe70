/* SPDX-License-Identifier: GPL-2.0 */
/* Record layouts of the process sensor. The Python decoder builds its numpy
 * dtypes from these structs' BTF in the compiled object. */
#ifndef BW_PROCESS_H
#define BW_PROCESS_H

#include "bw_common.h"

#define BW_TTY_LEN 32
#define BW_ARGS_MAX (128 * 1024)   /* argv bytes captured per exec */

/* bw_exec_event.flags */
#define BW_EXEC_ARGS_TRUNCATED  (1 << 0)
#define BW_EXEC_EXE_TRUNCATED   (1 << 1)
#define BW_EXEC_CWD_TRUNCATED   (1 << 2)
#define BW_EXEC_PEXE_TRUNCATED  (1 << 3)
#define BW_EXEC_ARGS_FAULT      (1 << 4)
#define BW_EXEC_EXE_PSEUDO      (1 << 5) /* exe has no place in the tree (memfd, deleted anon file) */

/* bw_exec_fail_event.flags */
#define BW_EXEC_FAIL_ARGS_TRUNCATED (1 << 0)
#define BW_EXEC_FAIL_FAULT          (1 << 1)
#define BW_FAIL_ARGS_MAX 4096   /* argv bytes captured of a failed exec */
#define BW_FAIL_ARGC_MAX 64     /* arguments read of a failed exec */

/* Followed by exe_len bytes of exe, cwd_len of cwd, pexe_len of the parent's
 * exe, filename_len of the name execve was given, interp_len of the
 * interpreter a script named (0 when the file was not a script; each
 * NUL-terminated) and args_len bytes of NUL-separated argv. */
struct bw_exec_event {
	struct bw_hdr hdr;
	__u64 cgroup_id;
	__u64 start_boot_ns;  /* the task's start time */
	__u64 pidns;          /* inode of the task's pid namespace */
	__u32 ppid;
	__u32 uid;
	__u32 gid;
	__u32 euid;
	__u32 egid;
	__u32 loginuid;
	__u32 ns_pid;         /* pid inside the task's own pid namespace */
	__u32 old_pid;        /* tid that called execve (differs for non-leader threads) */
	__u32 argc;           /* arguments in total, captured or not */
	__u32 args_size;      /* bytes of argv in total, captured or not */
	__u32 args_len;       /* bytes of argv captured */
	__u16 exe_len;
	__u16 cwd_len;
	__u16 pexe_len;
	__u16 flags;
	__u16 filename_len;
	__u16 interp_len;
	__u32 pad;
	char comm[BW_COMM_LEN];
	char pcomm[BW_COMM_LEN];
	char tty[BW_TTY_LEN];
	__u8 data[];
};

/* An execve/execveat that failed (opt-in: it needs a sys_exit program).
 * Followed by cwd_len bytes of cwd, filename_len of the name it was given
 * (each NUL-terminated) and args_len bytes of NUL-separated argv. */
struct bw_exec_fail_event {
	struct bw_hdr hdr;
	__u64 cgroup_id;
	__s64 ret;            /* -errno */
	__u32 ppid;
	__u32 uid;
	__s32 dirfd;          /* execveat's dirfd (AT_FDCWD for execve) */
	__u32 at_flags;       /* execveat's flags */
	__u32 argc;           /* arguments read (at most BW_FAIL_ARGC_MAX) */
	__u32 args_len;
	__u16 cwd_len;
	__u16 filename_len;
	__u16 flags;
	__u16 pad;
	char comm[BW_COMM_LEN];
	__u8 data[];
};

/* bw_fork_event.flags */
#define BW_FORK_THREAD (1 << 0)

struct bw_fork_event {
	struct bw_hdr hdr;      /* pid/tid: the forking task */
	__u64 cgroup_id;
	__u64 clone_flags;
	__u64 child_start_boot_ns;
	__u32 ppid;             /* the forking process's parent */
	__u32 uid;
	__u32 child_pid;        /* tgid of the new task */
	__u32 child_tid;
	__u32 flags;
	__u32 pad;
	char comm[BW_COMM_LEN];
};

/* bw_exit_event.flags */
#define BW_EXIT_THREAD (1 << 0)

struct bw_exit_event {
	struct bw_hdr hdr;
	__u64 cgroup_id;
	__u64 start_boot_ns;    /* the process's start (the thread's for a thread exit) */
	__u64 utime_ns;         /* whole thread group at exit (the thread's own for a thread exit) */
	__u64 stime_ns;
	__u32 ppid;
	__u32 uid;
	__u32 exit_code;        /* wait status: (code << 8) | 0x80 core | signal */
	__u32 flags;
	char comm[BW_COMM_LEN];
};

#endif
