// SPDX-License-Identifier: GPL-2.0
/* Two programs of one chained object on one hook: sensors/chain.py refuses
 * it (one successor slot per object and hook). */
#include "bw_chain.bpf.h"

SEC("tp_btf/sys_exit")
int BW_CHAINED(sys_exit, bw_two_a, struct pt_regs *regs, long ret)
{
	return 0;
}

SEC("tp_btf/sys_exit")
int BW_CHAINED(sys_exit, bw_two_b, struct pt_regs *regs, long ret)
{
	return 0;
}
