// SPDX-License-Identifier: GPL-2.0
/* Tiny programs `bpfwatch doctor` loads and attaches one at a time to learn
 * which program types this kernel really accepts. Each does nothing. */
#include "vmlinux.h"
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_tracing.h>

char LICENSE[] SEC("license") = "GPL";

SEC("tp_btf/sched_process_fork")
int BPF_PROG(bw_probe_tp_btf, struct task_struct *parent, struct task_struct *child)
{
	return 0;
}

SEC("raw_tp/sched_process_fork")
int bw_probe_raw_tp(void *ctx)
{
	return 0;
}

SEC("tp/sched/sched_process_fork")
int bw_probe_tp(void *ctx)
{
	return 0;
}

SEC("fentry/do_nanosleep")
int BPF_PROG(bw_probe_fentry)
{
	return 0;
}

SEC("fexit/do_nanosleep")
int BPF_PROG(bw_probe_fexit)
{
	return 0;
}

SEC("kprobe/do_nanosleep")
int BPF_KPROBE(bw_probe_kprobe)
{
	return 0;
}

SEC("uprobe")
int BPF_KPROBE(bw_probe_uprobe)
{
	return 0;
}

SEC("lsm/file_open")
int BPF_PROG(bw_probe_lsm, struct file *file)
{
	return 0;
}

SEC("xdp")
int bw_probe_xdp(struct xdp_md *ctx)
{
	return XDP_PASS;
}

SEC("tc")
int bw_probe_tc(struct __sk_buff *skb)
{
	return 0; /* TC_ACT_OK */
}

SEC("cgroup_skb/ingress")
int bw_probe_cgroup_skb(struct __sk_buff *skb)
{
	return 1; /* allow */
}
