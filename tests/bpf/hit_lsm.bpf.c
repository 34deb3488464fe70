// SPDX-License-Identifier: GPL-2.0
/* One lsm program (hit.bpf.h counts its calls): tests load, attach and fire it where the
 * kernel allows lsm programs (Debian 12's 6.1 in make test-kernel), and expect a refusal
 * in words where it does not. */
#include "hit.bpf.h"

SEC("lsm/file_open")
int BPF_PROG(bw_test_hit_lsm, struct file *file)
{
	return count_hit();
}
