/* SPDX-License-Identifier: GPL-2.0 */
/* Per-process syscall counts for diagnostic traces (read from a map, never streamed). */
#ifndef BW_SYSCOUNT_H
#define BW_SYSCOUNT_H

#include "bw_common.h"

struct bw_sc_key {
	__u32 tgid;
	__u32 nr;
};

struct bw_sc_stats {
	__u64 count;
	__u64 errors;
	__u64 total_ns;
	__u64 max_ns;
	char comm[BW_COMM_LEN];
};

#endif
