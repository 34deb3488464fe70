// SPDX-License-Identifier: GPL-2.0
/* One fexit program (hit.bpf.h counts its calls): tests load, attach and fire it where the
 * kernel allows fexit programs (Debian 12's 6.1 in make test-kernel), and expect a refusal
 * in words where it does not. */
#include "hit.bpf.h"

SEC("fexit/hrtimer_nanosleep")
int BPF_PROG(bw_test_hit_fexit)
{
	return count_hit();
}
