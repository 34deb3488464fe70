/* SPDX-License-Identifier: GPL-2.0 */
/* Record layouts of the network sensor. */
#ifndef BW_NETWORK_H
#define BW_NETWORK_H

#include "bw_common.h"

enum bw_tcp_kind {
	BW_TCP_CONNECT = 1,
	BW_TCP_ACCEPT = 2,
	BW_TCP_CLOSE = 3,
	BW_TCP_STATE = 4,
};

enum bw_sock_role { BW_ROLE_UNKNOWN = 0, BW_ROLE_CLIENT = 1, BW_ROLE_SERVER = 2, BW_ROLE_LISTENER = 3 };

/* bytes_sent/received of a close: TCP's counters as they are (they include the
 * SYN and FIN sequence numbers), or with those taken out (exact: Linux < 6.2),
 * or the application's bytes counted at sock_send/recv_length (Linux >= 6.2). */
enum bw_bytes_source { BW_BYTES_TCP = 0, BW_BYTES_TCP_EXACT = 1, BW_BYTES_APP = 2 };

/* Listening sockets by local port: a connection a listener receives is
 * attributed to the listener's owner until accept() names its own. */
struct bw_listen_key {
	__u16 port;   /* host order */
	__u16 family;
};
enum bw_closer { BW_CLOSER_UNKNOWN = 0, BW_CLOSER_LOCAL = 1, BW_CLOSER_REMOTE = 2 };

/* Who a TCP socket belongs to: recorded in process context (connect,
 * accept) so events from softirq context (established, close) are
 * attributed right. */
struct bw_sock_info {
	__u32 owner_pid;  /* 0: not known yet (accepted sockets before accept()) */
	__u32 owner_tid;
	__u32 owner_uid;
	__u32 role;
	__u64 cgroup_id;
	__u64 start_ns;
	__u64 established_ns;
	__u64 app_sent;      /* bytes the application sent / received (send/recv) */
	__u64 app_received;
	__u32 closer;
	__u32 counted;       /* app_* are counted (kernel >= 6.2) */
	char comm[BW_COMM_LEN];
	struct bw_tuple known; /* ports/addresses while established: the local
				* port is released before the socket closes */
};

struct bw_tcp_event {
	struct bw_hdr hdr;
	struct bw_tuple t;
	struct bw_sock_info who;
	__u64 sk;
	__u64 latency_ns;
	__u64 duration_ns;
	__u64 bytes_sent;
	__u64 bytes_received;
	__u32 kind;
	__s32 err;
	__u32 old_state;
	__u32 new_state;
	__u32 retransmits;
	__u32 segs_in;
	__u32 segs_out;
	__u32 bytes_from;    /* enum bw_bytes_source: where bytes_sent/received come from */
};

struct bw_udp_key {
	__u32 tgid;
	__u32 key_pad;
	struct bw_tuple t;
};

struct bw_udp_stats {
	__u64 bytes_sent;
	__u64 bytes_received;
	__u64 packets_sent;
	__u64 packets_received;
	__u64 first_ns;
	__u64 last_ns;
	__u64 cgroup_id;
	__u32 uid;
	__u32 st_pad;
	char comm[BW_COMM_LEN];
};

enum bw_udp_phase { BW_UDP_START = 1, BW_UDP_END = 2 };

struct bw_udp_event {
	struct bw_hdr hdr;
	struct bw_udp_key key;
	struct bw_udp_stats st;
	__u32 phase;
	__u32 ev_pad;
};

#endif
