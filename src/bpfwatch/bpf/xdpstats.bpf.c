// SPDX-License-Identifier: GPL-2.0
/* bpfwatch xdp-stats: counts packets and bytes by L3/L4 class, per CPU, and
 * passes every packet on (never drops). */
#include "vmlinux.h"
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_endian.h>
#include "xdpstats.h"

/* the classes' names, kept in the BTF for the Python side (tests/test_layouts.py) */
enum bw_l3 *bw_layout_l3 __attribute__((unused));
enum bw_l4 *bw_layout_l4 __attribute__((unused));

#define ETH_P_IP 0x0800
#define ETH_P_IPV6 0x86DD
#define ETH_P_ARP 0x0806
#define ETH_P_8021Q 0x8100
#define ETH_P_8021AD 0x88A8
#define IPPROTO_HOPOPTS_ 0
#define IPPROTO_ROUTING_ 43
#define IPPROTO_FRAGMENT_ 44
#define IPPROTO_DSTOPTS_ 60

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, BW_L3_N * BW_L4_N);
	__type(key, __u32);
	__type(value, struct bw_xdp_count);
} bw_xdp_counts SEC(".maps");

static __always_inline __u32 l4_class(__u8 proto)
{
	switch (proto) {
	case 6: return BW_L4_TCP;
	case 17: return BW_L4_UDP;
	case 1: case 58: return BW_L4_ICMP; /* ICMP, ICMPv6 */
	default: return BW_L4_OTHER;
	}
}

/* Skips up to three IPv6 extension headers to find the transport protocol. */
static __always_inline __u8 ipv6_l4(void *p, void *end, __u8 nexthdr)
{
	int i;

#pragma unroll
	for (i = 0; i < 3; i++) {
		if (nexthdr != IPPROTO_HOPOPTS_ && nexthdr != IPPROTO_ROUTING_ &&
		    nexthdr != IPPROTO_DSTOPTS_ && nexthdr != IPPROTO_FRAGMENT_)
			return nexthdr;
		__u8 *h = p;
		if ((void *)(h + 2) > end)
			return 255;
		nexthdr = h[0];
		p += nexthdr == IPPROTO_FRAGMENT_ ? 8 : (h[1] + 1) * 8;
	}
	return nexthdr;
}

SEC("xdp")
int bw_xdp_stats(struct xdp_md *ctx)
{
	void *data = (void *)(long)ctx->data;
	void *end = (void *)(long)ctx->data_end;
	struct ethhdr *eth = data;
	__u32 l3 = BW_L3_OTHER, l4 = BW_L4_NONE;
	void *p;

	if ((void *)(eth + 1) <= end) {
		__u16 proto = eth->h_proto;
		p = eth + 1;
		if (proto == bpf_htons(ETH_P_8021Q) || proto == bpf_htons(ETH_P_8021AD)) {
			struct vlan_hdr *vh = p;
			if ((void *)(vh + 1) <= end) {
				proto = vh->h_vlan_encapsulated_proto;
				p = vh + 1;
			}
		}
		if (proto == bpf_htons(ETH_P_IP)) {
			struct iphdr *ip = p;
			l3 = BW_L3_IPV4;
			if ((void *)(ip + 1) <= end)
				l4 = l4_class(ip->protocol);
		} else if (proto == bpf_htons(ETH_P_IPV6)) {
			struct ipv6hdr *ip6 = p;
			l3 = BW_L3_IPV6;
			if ((void *)(ip6 + 1) <= end)
				l4 = l4_class(ipv6_l4(ip6 + 1, end, ip6->nexthdr));
		} else if (proto == bpf_htons(ETH_P_ARP)) {
			l3 = BW_L3_ARP;
		}
	}
	__u32 key = l3 * BW_L4_N + l4;
	struct bw_xdp_count *c = bpf_map_lookup_elem(&bw_xdp_counts, &key);
	if (c) {
		c->packets++;
		c->bytes += end - data;
	}
	return XDP_PASS;
}

char LICENSE[] SEC("license") = "GPL";
