/* SPDX-License-Identifier: GPL-2.0 */
/* Record layouts of the file sensor. */
#ifndef BW_FILE_H
#define BW_FILE_H

#include "bw_common.h"

enum bw_file_kind {
	BW_FILE_NONE = 0,
	BW_FILE_OPEN = 1,
	BW_FILE_UNLINK = 2,
	BW_FILE_RENAME = 3,
	BW_FILE_MKDIR = 4,
	BW_FILE_RMDIR = 5,
	BW_FILE_CHMOD = 6,
	BW_FILE_CHOWN = 7,
	BW_FILE_TRUNCATE = 8,
	BW_FILE_LINK = 9,
	BW_FILE_SYMLINK = 10,
	BW_FILE_READ = 11,   /* counted into file.io, never one event per call */
	BW_FILE_WRITE = 12,
	BW_FILE_CLOSE = 13,
};

/* How to read one syscall's arguments; indexed by syscall number, filled by
 * Python from the architecture's table. Arg indexes are 0-5, or: */
#define BW_ARG_NONE   -1
#define BW_DIR_CWD    -2   /* relative paths start at the cwd */
#define BW_DIR_NONE   -3   /* the string is not a path to resolve (symlink target) */
#define BW_ARG_HOW    -4   /* flags and mode come from openat2's struct open_how */

struct bw_sysdesc {
	__u8 kind;
	__s8 dirfd1;
	__s8 path1;
	__s8 dirfd2;
	__s8 path2;
	__s8 fd;       /* the target is this fd's file (f* calls, I/O) */
	__s8 flags;
	__s8 mode;
	__s8 owner;    /* uid at owner, gid at owner + 1 */
	__s8 length;
	__u16 fixed_flags;  /* creat: O_CREAT|O_WRONLY|O_TRUNC */
};

/* bw_file_event.rflags */
#define BW_FILE_PATH1_RESOLVED (1 << 0) /* path1 is the kernel's path of the file */
#define BW_FILE_PATH1_TRUNC    (1 << 1)
#define BW_FILE_PATH2_TRUNC    (1 << 2)
#define BW_FILE_PATH1_BY_KEY   (1 << 3) /* no path bytes: it is the path of `file`, already sent */

/* Followed by path1, dir1, path2, dir2: each *_len bytes, NUL-terminated. A
 * dir is present only when its path is relative. */
struct bw_file_event {
	struct bw_hdr hdr;
	__u64 cgroup_id;
	__u64 file;     /* opens: the file's key for file.io (its path is this record's) */
	__s64 ret;
	__u64 length;
	__u32 uid;
	__u32 kind;
	__u32 nr;
	__u32 flags;
	__u32 mode;
	__u32 owner_uid;
	__u32 owner_gid;
	__u16 path1_len;
	__u16 dir1_len;
	__u16 path2_len;
	__u16 dir2_len;
	__u16 rflags;
	__u16 pad;
	char comm[BW_COMM_LEN];
	__u8 data[];
};

struct bw_fileio_key {
	__u32 tgid;
	__u32 key_pad;
	__u64 file;   /* struct file pointer: one entry per open file description */
};

struct bw_fileio_stats {
	__u64 reads;
	__u64 writes;
	__u64 read_bytes;
	__u64 write_bytes;
	__u64 first_ns;
	__u64 last_ns;
	__u32 uid;
	__u32 ignored;  /* outside the path filters: counted nowhere */
	char comm[BW_COMM_LEN];
};

/* file.io: totals for one (process, file) when it is closed or the process exits */
struct bw_fileio_event {
	struct bw_hdr hdr;
	struct bw_fileio_key key;
	struct bw_fileio_stats st;
	__u32 closed;   /* 1: close(), 0: process exit */
	__u32 pad2;
};

/* Sent once per (process, file), before its first totals: the path. */
struct bw_fileio_path_event {
	struct bw_hdr hdr;
	struct bw_fileio_key key;
	__u16 path_len;
	__u16 truncated;
	__u32 path_pad;
	__u8 data[];
};

#endif
