/* SPDX-License-Identifier: GPL-2.0 */
/* Synthetic events for ring buffer tests and benchmarks. */
#ifndef BW_LOADGEN_H
#define BW_LOADGEN_H

#include "bw_common.h"

struct bw_bench_event {
	struct bw_hdr hdr;
	__u64 seq;   /* 0, 1, 2, ... per burst, so gaps are visible */
	__u64 nr;    /* the syscall that produced it */
};

#endif
