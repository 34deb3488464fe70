/* SPDX-License-Identifier: GPL-2.0 */
/* Layouts of the profiler (`bpfwatch run`): kernel-side aggregates per
 * process slot and the few lifecycle records it sends. Python reads every
 * layout here from the compiled object's BTF. */
#ifndef BW_PROFILE_H
#define BW_PROFILE_H

#include "bw_common.h"

/* Sizes, as an enum so that Python reads them from BTF too. */
enum bw_prof_limits {
	BW_PROF_NR = 512,         /* syscall numbers counted; others land in BW_PROF_NR - 1 */
	BW_PROF_HIST = 48,        /* log2(ns) latency buckets; the last one is open-ended */
	BW_PROF_CATS = 16,        /* syscall categories (Python numbers them) */
	BW_PROF_NO_SYSCALL = 15,  /* category of blocking outside a syscall (page fault) */
	BW_PROF_FILENAME = 256,
	BW_PROF_ARGS = 1024,      /* a power of two */
};

/* Slots: 0 collects processes beyond capacity, 1 is the root (CMD or the
 * attached process), the others are handed out at fork from a queue. */
#define BW_PROF_SLOT_OVERFLOW 0
#define BW_PROF_SLOT_ROOT 1

/* Why a task was off the CPU. */
enum bw_off_reason {
	BW_OFF_RUNQ = 0,   /* runnable, waiting for a CPU (preempted or woken) */
	BW_OFF_IO = 1,     /* uninterruptible sleep (D): disk I/O, page cache, locks */
	BW_OFF_SLEEP = 2,  /* interruptible sleep (S): waits, timers, sockets, pipes */
	BW_OFF_N = 3,
};

/* flags of a tid (bw_prof_tids value bits 24..31) */
#define BW_PT_PRE_EXEC (1 << 0) /* launched CMD: count from its execve on */
#define BW_PT_NEW (1 << 1)      /* next syscall exit is the child's return from clone */

/* Scheduler state of a profiled thread (task-local storage). */
struct bw_prof_task {
	__u64 off_ns;     /* when it left the CPU or was woken; 0 while on it */
	__u64 on_ns;      /* when it got the CPU; 0 while off it */
	__u32 slot;
	__u8 off_reason;  /* enum bw_off_reason */
	__u8 off_cat;     /* category of the syscall it blocked in */
	__u16 pad;
};

/* Per (slot, syscall), per CPU. */
struct bw_prof_sys {
	__u64 calls;
	__u64 errors;
	__u64 ns;         /* total time inside the syscall (latency mode) */
};

/* A slot's syscalls: one map value per slot, not one per (slot, syscall).
 * The kernel allocates a per-CPU array value by value, about 0.6 us each:
 * 87,040 cells took 53 ms to create, 170 rows take a fraction of one. */
struct bw_prof_row {
	struct bw_prof_sys sys[BW_PROF_NR];
};

/* A syscall's latency buckets, log2(ns), one map value per syscall. */
struct bw_prof_hist_row {
	__u64 bucket[BW_PROF_HIST];
};

/* Per slot, per CPU: time accounting and resources. On- and off-CPU time
 * accrue at each context switch; the thread counters (tick-sampled user/sys
 * split, faults, I/O) are added when each thread exits. */
struct bw_prof_stats {
	__u64 off_ns[BW_OFF_N];           /* by enum bw_off_reason */
	__u64 blocked_ns[BW_PROF_CATS];   /* IO + SLEEP time by category of the blocking syscall */
	__u64 net_tx;                     /* bytes sent/received on IPv4/IPv6 sockets */
	__u64 net_rx;
	__u64 oncpu_ns;                   /* on-CPU time, from sched_switch */
	__u64 utime_ns;
	__u64 stime_ns;
	__u64 minflt;
	__u64 majflt;
	__u64 nvcsw;
	__u64 nivcsw;
	__u64 rchar;
	__u64 wchar;
	__u64 read_bytes;
	__u64 write_bytes;
	__u64 threads;                    /* threads created */
	__u64 threads_exited;
	__u64 procs;                      /* processes forked into this slot */
};

struct bw_prof_fork_event {
	struct bw_hdr hdr;        /* the forking task */
	__u64 child_start_boot_ns;
	__u32 child_pid;
	__u32 child_slot;
	__u32 slot;               /* the parent's */
	__u32 pad;
	char comm[BW_COMM_LEN];
};

struct bw_prof_exec_event {
	struct bw_hdr hdr;
	__u32 slot;
	__u32 ppid;
	__u32 args_size;          /* bytes of argv in total */
	__u16 filename_len;
	__u16 args_len;           /* bytes captured, NUL-separated */
	char comm[BW_COMM_LEN];
	char filename[BW_PROF_FILENAME];
	char args[BW_PROF_ARGS];
};

struct bw_prof_exit_event {
	struct bw_hdr hdr;
	__u64 start_boot_ns;
	__u32 slot;
	__u32 ppid;
	__u32 exit_code;          /* wait status */
	__u32 pad;
	__u64 peak_rss_pages;     /* high-water RSS, 0 if the mm was already gone */
	char comm[BW_COMM_LEN];
};

#endif
