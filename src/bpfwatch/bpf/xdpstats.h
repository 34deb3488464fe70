/* SPDX-License-Identifier: GPL-2.0 */
/* XDP packet counter: per-CPU packets and bytes per (L3, L4) class. */
#ifndef BW_XDPSTATS_H
#define BW_XDPSTATS_H

enum bw_l3 { BW_L3_IPV4 = 0, BW_L3_IPV6 = 1, BW_L3_ARP = 2, BW_L3_OTHER = 3, BW_L3_N = 4 };
enum bw_l4 { BW_L4_TCP = 0, BW_L4_UDP = 1, BW_L4_ICMP = 2, BW_L4_OTHER = 3, BW_L4_NONE = 4, BW_L4_N = 5 };

/* One slot per (l3, l4): key = l3 * BW_L4_N + l4. */
struct bw_xdp_count {
	__u64 packets;
	__u64 bytes;
};

#endif
