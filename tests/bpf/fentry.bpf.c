// SPDX-License-Identifier: GPL-2.0
/* Test object with an fentry program (refused at load on this kernel) and a raw tracepoint. */
#include "vmlinux.h"
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_tracing.h>

SEC("fentry/do_nanosleep")
int BPF_PROG(bw_test_fentry)
{
	return 0;
}

char LICENSE[] SEC("license") = "GPL";
