/* SPDX-License-Identifier: GPL-2.0 */
/* In-kernel scope filters shared by every sensor. Python sets the flt_*
 * globals before load; the tracked set (bw_tracked) is one map shared by all
 * loaded sensors, kept up to date on fork/exit by the process sensor. */
#ifndef BW_FILTER_BPF_H
#define BW_FILTER_BPF_H

#include "bw_helpers.bpf.h"

const volatile __u32 flt_tracked = 0;  /* only tgids in bw_tracked */
const volatile __u32 flt_uid_on = 0;
const volatile __u32 flt_uid = 0;
const volatile __u32 flt_comm = 0;     /* only comms in bw_comms */

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 65536);
	__type(key, __u32);
	__type(value, __u8);
} bw_tracked SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 256);
	__type(key, char[BW_COMM_LEN]);
	__type(value, __u8);
} bw_comms SEC(".maps");

/* Scope: the tracked set decides which processes we look at at all. */
static __always_inline int in_scope(__u32 tgid)
{
	return !flt_tracked || bpf_map_lookup_elem(&bw_tracked, &tgid);
}

/* Match: uid and comm decide whether an event is emitted; they never stop
 * descendants of a followed process from being tracked. */
static __always_inline int matches(struct task_struct *task)
{
	if (flt_uid_on && BPF_CORE_READ(task, cred, uid.val) != flt_uid)
		return 0;
	if (flt_comm) {
		char comm[BW_COMM_LEN] = {};

		BPF_CORE_READ_STR_INTO(&comm, task, comm);
		if (!bpf_map_lookup_elem(&bw_comms, &comm))
			return 0;
	}
	return 1;
}

#endif
