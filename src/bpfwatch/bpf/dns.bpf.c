// SPDX-License-Identifier: GPL-2.0
/* DNS sensor: copies DNS messages (UDP, to or from the DNS port) out of the
 * user buffers at send/recv syscall exit, attributed to the process. Parsing
 * happens in Python, which never trusts the bytes. */
#include "bw_filter.bpf.h"
#include "bw_sock.bpf.h"
#include "dns.h"

BW_LAYOUT(struct bw_dns_event, dns_event);

const volatile __u16 dns_port = 0x3500; /* 53, network order */
const volatile __s32 nr_sendto = -1, nr_recvfrom = -1, nr_sendmsg = -1, nr_recvmsg = -1;
const volatile __s32 nr_sendmmsg = -1, nr_recvmmsg = -1;

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

#define BW_MMSG_MAX 8

SEC("tp_btf/sys_exit")
int BPF_PROG(bw_dns_sys_exit, struct pt_regs *regs, long ret)
{
	long nr = bw_syscall_nr(regs);
	int single = nr == nr_sendto || nr == nr_recvfrom || nr == nr_sendmsg || nr == nr_recvmsg;
	int multi = nr == nr_sendmmsg || nr == nr_recvmmsg;

	if ((!single && !multi) || ret <= 0)
		return 0;
	struct task_struct *task = (struct task_struct *)bpf_get_current_task_btf();

	if (!in_scope(bpf_get_current_pid_tgid() >> 32))
		return 0;
	struct sock *sk = bw_fd_sock(task, (int)bw_syscall_arg(regs, 0));

	if (!sk || BPF_CORE_READ(sk, sk_protocol) != BW_IPPROTO_UDP || !matches(task))
		return 0;
	void *name = 0, *base = 0;
	__u64 len = 0;

	if (nr == nr_sendto || nr == nr_recvfrom) {
		dns_message(task, sk, (void *)bw_syscall_arg(regs, 4), (void *)bw_syscall_arg(regs, 1), ret,
			    nr == nr_sendto);
		return 0;
	}
	if (single) {
		bw_read_msghdr((void *)bw_syscall_arg(regs, 1), &name, &base, &len);
		dns_message(task, sk, name, base, len < (__u64)ret ? len : ret, nr == nr_sendmsg);
		return 0;
	}
	struct mmsghdr *vec = (void *)bw_syscall_arg(regs, 1);

	for (int i = 0; i < BW_MMSG_MAX; i++) {
		unsigned int mlen = 0;

		if (i >= ret)
			break;
		bw_read_msghdr(&vec[i].msg_hdr, &name, &base, &len);
		bpf_probe_read_user(&mlen, sizeof(mlen), &vec[i].msg_len);
		dns_message(task, sk, name, base, len < mlen ? len : mlen, nr == nr_sendmmsg);
	}
	return 0;
}
