/* SPDX-License-Identifier: GPL-2.0 */
/* One program per hot tracepoint, however many sensors hook it.
 *
 * Each program attached to sys_enter or sys_exit costs about 80 ns on every
 * syscall of the host: the tracepoint calls them one by one, indirectly (one
 * program is a direct static call). A tail call costs next to nothing. So the
 * sensors of one Monitor that hook the same tracepoint form a chain: Python
 * attaches only the first program, puts the others in the chain's program
 * array (owned by the process sensor, reused by the rest) and tells each
 * object, before load, the slot of its successor (bw_next_<hook>). Slot
 * numbers are constants, so the JIT makes each tail call a direct jump. An
 * object loaded alone keeps the slot past the end: its tail call does
 * nothing. Python side: sensors/chain.py. */
#ifndef BW_CHAIN_BPF_H
#define BW_CHAIN_BPF_H

#include "bw_helpers.bpf.h"

#define BW_CHAIN_MAX 8

#define BW_CHAIN_HOOK(hook)                                   \
	struct {                                              \
		__uint(type, BPF_MAP_TYPE_PROG_ARRAY);        \
		__uint(max_entries, BW_CHAIN_MAX);            \
		__type(key, __u32);                           \
		__type(value, __u32);                         \
	} bw_chain_##hook SEC(".maps");                       \
	const volatile __u32 bw_next_##hook = BW_CHAIN_MAX

BW_CHAIN_HOOK(sys_enter);
BW_CHAIN_HOOK(sys_exit);
BW_CHAIN_HOOK(sock_send_length);
BW_CHAIN_HOOK(sock_recv_length);

/* BPF_PROG for a chained hook: the body runs (its returns end the body, not
 * the program), then the next sensor's program does. Use with the matching
 * SEC("tp_btf/<hook>"). */
#define BW_CHAINED(hook, name, args...)                                         \
	name(unsigned long long *ctx);                                          \
	static __always_inline int ____##name(unsigned long long *ctx, ##args); \
	int name(unsigned long long *ctx)                                       \
	{                                                                       \
		_Pragma("GCC diagnostic push")                                  \
		_Pragma("GCC diagnostic ignored \"-Wint-conversion\"")          \
		____##name(___bpf_ctx_cast(args));                              \
		_Pragma("GCC diagnostic pop")                                   \
		bpf_tail_call(ctx, &bw_chain_##hook, bw_next_##hook);           \
		return 0;                                                       \
	}                                                                       \
	static __always_inline int ____##name(unsigned long long *ctx, ##args)

#endif
