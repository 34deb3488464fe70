// SPDX-License-Identifier: GPL-2.0
/* DNS sensor: copies DNS messages (UDP or TCP, to or from the DNS port, as
 * client or as server) out of the user buffers, attributed to the process.
 * Parsing happens in Python, which never trusts the bytes. */
#include "bw_filter.bpf.h"
#include "bw_sock.bpf.h"
#include "dns.h"

BW_LAYOUT(struct bw_dns_event, dns_event);

const volatile __u16 dns_port = 0x3500; /* 53, network order */

struct bw_dns_buf {
	__u8 raw[sizeof(struct bw_dns_event) + 4 * BW_DNS_MAX]; /* slack: masked iovec offsets */
};

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct bw_dns_buf);
} bw_dns_scratch SEC(".maps");

/* The socket's ends, and whether this host is the client or the server of
 * the DNS exchange (0: neither end is the DNS port). */
static __always_inline __u32 dns_role(struct sock *sk, const void *addr, struct bw_tuple *t)
{
	bw_sock_tuple(sk, t);
	if (t->rport == 0 && bw_read_sockaddr(addr, t))
		return 0;
	if (t->rport == dns_port)
		return BW_DNS_CLIENT;
	if (t->lport == dns_port)
		return BW_DNS_SERVER;
	return 0;
}

static __always_inline struct bw_dns_event *dns_record(void)
{
	__u32 zero = 0;
	struct bw_dns_buf *b = bpf_map_lookup_elem(&bw_dns_scratch, &zero);

	return b ? (void *)b->raw : 0;
}

static __always_inline void dns_emit(struct bw_dns_event *e, struct task_struct *task, struct sock *sk,
				     __u32 role, __u64 len, __u32 n, int sent)
{
	bw_fill_hdr(&e->hdr, BW_EV_DNS, task);
	e->cgroup_id = bpf_get_current_cgroup_id();
	e->sk = (__u64)sk;
	e->uid = bw_task_uid(task);
	e->direction = sent ? BW_DNS_SENT : BW_DNS_RECEIVED;
	e->role = role;
	e->pad = 0;
	e->len = len;
	e->captured = n;
	bw_task_comm(e->comm, task);
	bw_output(e, sizeof(*e) + (n & (2 * BW_DNS_MAX - 1)));
}

/* One UDP message: remote from the socket or the sockaddr, payload from base. */
static __always_inline void dns_message(struct task_struct *task, struct sock *sk, const void *addr,
					const void *base, __u64 len, int sent)
{
	struct bw_dns_event *e = dns_record();

	if (!e || !base || !len)
		return;
	__u8 *data = (__u8 *)e + sizeof(*e);
	__u32 role = dns_role(sk, addr, &e->t);

	if (!role)
		return;
	__u32 n = len > BW_DNS_MAX ? BW_DNS_MAX : len;

	n &= (2 * BW_DNS_MAX - 1);
	if (bpf_probe_read_user(data, n, base))
		return;
	dns_emit(e, task, sk, role, len, n, sent);
}

struct dns_each_ctx {
	struct task_struct *task;
	struct sock *sk;
	struct bw_dgram *d;
	int n;
	int sent;
};

/* One datagram of a send/recv call (a bpf_loop callback: verified once, not
 * once per datagram a sendmmsg may carry). */
static long dns_each(__u64 i, struct dns_each_ctx *c)
{
	struct bw_dgram *d = c->d;

	if (i >= (__u64)c->n)
		return 1;
	d += i & (BW_MMSG_MAX - 1);
	dns_message(c->task, c->sk, d->name, d->base, d->base_len, c->sent);
	return 0;
}

SEC("tp_btf/sys_exit")
int BW_CHAINED(sys_exit, bw_dns_sys_exit, struct pt_regs *regs, long ret)
{
	long nr = bw_syscall_nr(regs);

	if (!bw_is_dgram_syscall(nr) || ret <= 0)
		return 0;
	struct task_struct *task = (struct task_struct *)bpf_get_current_task_btf();

	if (!in_scope(task->tgid))
		return 0;
	struct sock *sk = bw_fd_sock(task, (int)bw_syscall_arg(regs, 0));

	if (!sk || BPF_CORE_READ(sk, sk_protocol) != BW_IPPROTO_UDP || !matches(task))
		return 0;
	struct bw_dgram *d = bw_dgram_slots();
	int sent = 0;

	if (!d)
		return 0;
	struct dns_each_ctx c = { .task = task, .sk = sk, .d = d };

	c.n = bw_syscall_dgrams(regs, nr, ret, d, &sent);
	c.sent = sent;
	bpf_loop(BW_MMSG_MAX, dns_each, &c, 0);
	return 0;
}

/* ---- DNS over TCP: from the socket layer's own tracepoints (Linux >= 6.2),
 * which fire only for socket I/O, so other reads and writes cost nothing ---- */

const volatile __s32 nr_read = -1, nr_write = -1, nr_readv = -1, nr_writev = -1;
#define BW_DNS_IOV_MAX 4

/* Copies up to BW_DNS_MAX of the first `total` bytes of a user iovec array. */
static __always_inline __u32 copy_iov(__u8 *data, const struct iovec *iov, __u64 iovcnt, __u64 total)
{
	__u32 off = 0;

	for (int i = 0; i < BW_DNS_IOV_MAX; i++) {
		struct iovec v;

		if (i >= iovcnt || off >= BW_DNS_MAX || off >= total)
			break;
		if (bpf_probe_read_user(&v, sizeof(v), &iov[i]))
			break;
		__u64 n = v.iov_len;

		if (n > total - off)
			n = total - off;
		if (n > BW_DNS_MAX - off)
			n = BW_DNS_MAX - off;
		/* the compiler knows these bounds; the verifier must see them */
		barrier_var(off);
		barrier_var(n);
		off &= (BW_DNS_MAX - 1);
		n &= (BW_DNS_MAX * 2 - 1);
		if (n && bpf_probe_read_user(data + off, n, v.iov_base))
			break;
		off += n;
	}
	return off;
}

static __always_inline void dns_tcp(struct sock *sk, int ret, int sent)
{
	if (ret <= 0 || BPF_CORE_READ(sk, sk_protocol) != BW_IPPROTO_TCP)
		return;
	__u16 lport = bpf_htons(BPF_CORE_READ(sk, __sk_common.skc_num));
	__u16 rport = BPF_CORE_READ(sk, __sk_common.skc_dport);

	if (lport != dns_port && rport != dns_port)
		return;
	struct task_struct *task = (struct task_struct *)bpf_get_current_task_btf();

	if (!in_scope(task->tgid) || !matches(task))
		return;
	struct bw_dns_event *e = dns_record();

	if (!e)
		return;
	__u8 *data = (__u8 *)e + sizeof(*e);
	__u32 role = dns_role(sk, 0, &e->t);

	if (!role)
		return;
	struct pt_regs *regs = (struct pt_regs *)bpf_task_pt_regs(task);
	long nr = bw_syscall_nr(regs);
	__u32 n = 0;

	if (nr == nr_read || nr == nr_write || nr == nr_sendto || nr == nr_recvfrom) {
		n = ret > BW_DNS_MAX ? BW_DNS_MAX : ret;
		n &= (2 * BW_DNS_MAX - 1);
		if (bpf_probe_read_user(data, n, (void *)bw_syscall_arg(regs, 1)))
			return;
	} else if (nr == nr_readv || nr == nr_writev) {
		n = copy_iov(data, (void *)bw_syscall_arg(regs, 1), bw_syscall_arg(regs, 2), ret);
	} else if (nr == nr_sendmsg || nr == nr_recvmsg) {
		struct user_msghdr m = {};

		if (bpf_probe_read_user(&m, sizeof(m), (void *)bw_syscall_arg(regs, 1)))
			return;
		n = copy_iov(data, m.msg_iov, m.msg_iovlen, ret);
	} else {
		return; /* splice, sendfile, io_uring: not followed */
	}
	dns_emit(e, task, sk, role, ret, n, sent);
}

SEC("tp_btf/sock_send_length")
int BW_CHAINED(sock_send_length, bw_dns_tcp_send, struct sock *sk, int ret, int flags)
{
	dns_tcp(sk, ret, 1);
	return 0;
}

SEC("tp_btf/sock_recv_length")
int BW_CHAINED(sock_recv_length, bw_dns_tcp_recv, struct sock *sk, int ret, int flags)
{
	if (!(flags & BW_MSG_PEEK))
		dns_tcp(sk, ret, 0);
	return 0;
}
