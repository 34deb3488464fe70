// SPDX-License-Identifier: GPL-2.0
/* Test object standing for someone else's program (no bw_ prefix). */
#include "vmlinux.h"
#include <bpf/bpf_helpers.h>

SEC("tc")
int foreign_tc(struct __sk_buff *skb)
{
	return 0;
}

char LICENSE[] SEC("license") = "GPL";
