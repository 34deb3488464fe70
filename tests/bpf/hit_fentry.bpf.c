// SPDX-License-Identifier: GPL-2.0
/* One fentry program (hit.bpf.h counts its calls): tests load, attach and fire it where the
 * kernel allows fentry programs (Debian 12's 6.1 in make test-kernel), and expect a refusal
 * in words where it does not. */
#include "hit.bpf.h"

SEC("fentry/hrtimer_nanosleep")
int BPF_PROG(bw_test_hit_fentry)
{
	return count_hit();
}
