// SPDX-License-Identifier: GPL-2.0
/* One kprobe program (hit.bpf.h counts its calls): tests load, attach and fire it where the
 * kernel allows kprobe programs (Debian 12's 6.1 in make test-kernel), and expect a refusal
 * in words where it does not. */
#include "hit.bpf.h"

SEC("kprobe/hrtimer_nanosleep")
int BPF_KPROBE(bw_test_hit_kprobe)
{
	return count_hit();
}
