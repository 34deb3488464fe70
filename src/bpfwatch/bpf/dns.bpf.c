// SPDX-License-Identifier: GPL-2.0
/* DNS sensor: copies DNS messages (UDP, to or from the DNS port) out of the
 * user buffers at send/recv syscall exit, attributed to the process. Parsing
 * happens in Python, which never trusts the bytes. */
#include "bw_filter.bpf.h"
#include "bw_sock.bpf.h"
#include "dns.h"

BW_LAYOUT(struct bw_dns_event, dns_event);

const volatile __u16 dns_port = 0x3500; /* 53, network order */

struct bw_dns_buf {
	__u8 raw[sizeof(struct bw_dns_event) + 2 * BW_DNS_MAX];
};

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct bw_dns_buf);
} bw_dns_scratch SEC(".maps");

/* One message: remote from the socket or the sockaddr, payload from base. */
static __always_inline void dns_message(struct task_struct *task, struct sock *sk, const void *addr,
					const void *base, __u64 len, int sent)
{
	__u32 zero = 0;
	struct bw_dns_buf *b = bpf_map_lookup_elem(&bw_dns_scratch, &zero);

	if (!b || !base || !len)
		return;
	struct bw_dns_event *e = (void *)b->raw;
	__u8 *data = b->raw + sizeof(*e);

	bw_sock_tuple(sk, &e->t);
	if (e->t.rport == 0 && bw_read_sockaddr(addr, &e->t))
		return;
	if (e->t.rport != dns_port)
		return;
	__u32 n = len > BW_DNS_MAX ? BW_DNS_MAX : len;

	n &= (2 * BW_DNS_MAX - 1);
	if (bpf_probe_read_user(data, n, base))
		return;
	bw_fill_hdr(&e->hdr, BW_EV_DNS, task);
	e->cgroup_id = bpf_get_current_cgroup_id();
	e->sk = (__u64)sk;
	e->uid = BPF_CORE_READ(task, cred, uid.val);
	e->direction = sent ? BW_DNS_SENT : BW_DNS_RECEIVED;
	e->len = len;
	e->captured = n;
	BPF_CORE_READ_STR_INTO(&e->comm, task, comm);
	bw_output(e, sizeof(*e) + n);
}

SEC("tp_btf/sys_exit")
int BPF_PROG(bw_dns_sys_exit, struct pt_regs *regs, long ret)
{
	long nr = bw_syscall_nr(regs);

	if (!bw_is_dgram_syscall(nr) || ret <= 0)
		return 0;
	struct task_struct *task = (struct task_struct *)bpf_get_current_task_btf();

	if (!in_scope(bpf_get_current_pid_tgid() >> 32))
		return 0;
	struct sock *sk = bw_fd_sock(task, (int)bw_syscall_arg(regs, 0));

	if (!sk || BPF_CORE_READ(sk, sk_protocol) != BW_IPPROTO_UDP || !matches(task))
		return 0;
	struct bw_dgram *d = bw_dgram_slots();
	int sent = 0;

	if (!d)
		return 0;
	int n = bw_syscall_dgrams(regs, nr, ret, d, &sent);

	for (int i = 0; i < BW_MMSG_MAX; i++) {
		if (i >= n)
			break;
		dns_message(task, sk, d[i].name, d[i].base, d[i].base_len, sent);
	}
	return 0;
}
