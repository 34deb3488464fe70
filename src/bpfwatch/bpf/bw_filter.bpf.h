/* SPDX-License-Identifier: GPL-2.0 */
/* In-kernel scope filters shared by every sensor. Python sets the flt_*
 * globals before load; the tracked set (bw_tracked) is one map shared by all
 * loaded sensors, kept up to date on fork/exit by the process sensor. */
#ifndef BW_FILTER_BPF_H
#define BW_FILTER_BPF_H

#include "bw_helpers.bpf.h"
#include "bw_chain.bpf.h"

const volatile __u32 flt_tracked = 0;  /* only tgids in bw_tracked */
const volatile __u32 flt_uid_on = 0;
const volatile __u32 flt_uid = 0;
const volatile __u32 flt_comm = 0;     /* only comms in bw_comms */
const volatile __u32 flt_deny_comm = 0;
const volatile __u32 flt_deny_pid = 0;
const volatile __u32 flt_cgroup = 0;   /* BW_CG_ALLOW | BW_CG_DENY: lists in bw_cgroups */

#define BW_TRACK_PID 1     /* bw_tracked values: this process only */
#define BW_TRACK_FOLLOW 2  /* ... and its descendants */
#define BW_CG_ALLOW 1
#define BW_CG_DENY 2

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 65536);
	__type(key, __u32);
	__type(value, __u8);
} bw_tracked SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 4096);
	__type(key, __u32);
	__type(value, __u8);
} bw_deny_pids SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 256);
	__type(key, char[BW_COMM_LEN]);
	__type(value, __u8);
} bw_deny_comms SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 16384);
	__type(key, __u64);   /* cgroup id */
	__type(value, __u8);  /* BW_CG_ALLOW or BW_CG_DENY */
} bw_cgroups SEC(".maps");

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
 * descendants of a followed process from being tracked. `task` is a BTF
 * pointer, read with plain loads (see bw_task_uid in bw_helpers.bpf.h). */
static __always_inline int matches(struct task_struct *task)
{
	if (flt_uid_on && task->cred->uid.val != flt_uid)
		return 0;
	if (flt_deny_pid) {
		__u32 tgid = task->tgid;

		if (bpf_map_lookup_elem(&bw_deny_pids, &tgid))
			return 0;
	}
	if (flt_comm || flt_deny_comm) {
		char comm[BW_COMM_LEN] = {};

		BPF_CORE_READ_STR_INTO(&comm, task, comm);
		if (flt_comm && !bpf_map_lookup_elem(&bw_comms, &comm))
			return 0;
		if (flt_deny_comm && bpf_map_lookup_elem(&bw_deny_comms, &comm))
			return 0;
	}
	if (flt_cgroup) {
		__u64 cg = bpf_get_current_cgroup_id();
		__u8 *v = bpf_map_lookup_elem(&bw_cgroups, &cg);

		if ((flt_cgroup & BW_CG_ALLOW) && (!v || *v != BW_CG_ALLOW))
			return 0;
		if ((flt_cgroup & BW_CG_DENY) && v && *v == BW_CG_DENY)
			return 0;
	}
	return 1;
}

#endif
