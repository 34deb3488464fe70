/* SPDX-License-Identifier: GPL-2.0 */
/* Shared by every bpfwatch BPF program and mirrored nowhere: Python reads
 * these layouts from the compiled object's BTF. */
#ifndef BW_COMMON_H
#define BW_COMMON_H

#define BW_COMM_LEN 16

/* Event type ids, kept in one place for every sensor. */
enum bw_event_type {
	BW_EV_EXEC = 1,
	BW_EV_FORK = 2,
	BW_EV_EXIT = 3,
	BW_EV_EXEC_FAIL = 4,    /* an execve/execveat returned an error (opt-in) */
	BW_EV_FILE_OP = 10,     /* open, unlink, rename, ... (kind in the record) */
	BW_EV_FILE_IO = 11,     /* read/write totals of one (process, file) */
	BW_EV_FILE_IOPATH = 12, /* internal: the path behind a file key, sent once */
	BW_EV_TCP = 20,         /* connect, accept, close, state (kind in the record) */
	BW_EV_UDP = 21,         /* a UDP flow starts or ends */
	BW_EV_DNS = 22,         /* a DNS message sent or received */
	BW_EV_PROF_EXEC = 30,   /* profiler: a tracked process exec'd */
	BW_EV_PROF_FORK = 31,   /* profiler: a tracked process forked a process */
	BW_EV_PROF_EXIT = 32,   /* profiler: the last thread of a tracked process exited */
	BW_EV_SEC_SYSCALL = 40, /* security: a watched syscall returned (kind in the record) */
	BW_EV_SEC_EXEC = 41,    /* security: an exec changed credentials or ran a suspect file */
	BW_EV_SYSCOUNT = 45,    /* internal marker: syscall counts are read from a map, never sent */
	BW_EV_BENCH = 100,
};

/* Addresses and ports of a socket, in network byte order; IPv4 in the first
 * 4 bytes of the address. */
struct bw_tuple {
	__u8 laddr[16];
	__u8 raddr[16];
	__u16 lport;
	__u16 rport;
	__u16 family;
	__u16 proto;
};

/* Every ring buffer record starts with this header. */
struct bw_hdr {
	__u64 ts_boot_ns; /* bpf_ktime_get_boot_ns() at the event */
	__u32 type;       /* enum bw_event_type */
	__u32 pid;        /* tgid, in the initial pid namespace */
	__u32 tid;
	__u32 cpu;
};

#endif
