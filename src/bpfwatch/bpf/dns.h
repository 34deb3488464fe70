/* SPDX-License-Identifier: GPL-2.0 */
/* Record layout of the DNS sensor. */
#ifndef BW_DNS_H
#define BW_DNS_H

#include "bw_common.h"

#define BW_DNS_MAX 2048   /* message bytes captured (EDNS answers reach ~1232) */

enum bw_dns_dir { BW_DNS_SENT = 1, BW_DNS_RECEIVED = 2 };
/* client: the remote port is the DNS port; server: the local one (a resolver here) */
enum bw_dns_role { BW_DNS_CLIENT = 1, BW_DNS_SERVER = 2 };

/* Followed by `captured` bytes of the DNS message (`len` in total). Over
 * TCP the bytes are a piece of the stream (2-byte length, message, ...),
 * reassembled per socket and direction in Python. */
struct bw_dns_event {
	struct bw_hdr hdr;
	struct bw_tuple t;
	__u64 cgroup_id;
	__u64 sk;
	__u32 uid;
	__u32 direction;
	__u32 len;
	__u32 captured;
	__u32 role;
	__u32 pad;
	char comm[BW_COMM_LEN];
	__u8 data[];
};

#endif
