/* SPDX-License-Identifier: GPL-2.0 */
/* Sockets from file descriptors and addresses from user sockaddrs/msghdrs,
 * shared by the network and DNS sensors. */
#ifndef BW_SOCK_BPF_H
#define BW_SOCK_BPF_H

#include "bw_helpers.bpf.h"
#include <bpf/bpf_endian.h>

#define BW_AF_INET 2
#define BW_AF_INET6 10
#define BW_IPPROTO_TCP 6
#define BW_IPPROTO_UDP 17
#define BW_S_IFMT 0170000
#define BW_S_IFSOCK 0140000

/* The struct sock behind fd, or NULL when fd is not a socket. */
static __always_inline struct sock *bw_fd_sock(struct task_struct *task, long fd)
{
	struct file *f = bw_fd_file(task, fd);

	if (!f || (BPF_CORE_READ(f, f_inode, i_mode) & BW_S_IFMT) != BW_S_IFSOCK)
		return 0;
	struct socket *so = BPF_CORE_READ(f, private_data);

	return so ? BPF_CORE_READ(so, sk) : 0;
}

/* Local and (if connected) remote address of sk; ports in network order. */
static __always_inline void bw_sock_tuple(const struct sock *sk, struct bw_tuple *t)
{
	__u16 family = BPF_CORE_READ(sk, __sk_common.skc_family);

	__builtin_memset(t, 0, sizeof(*t));
	t->family = family;
	t->proto = BPF_CORE_READ(sk, sk_protocol);
	t->lport = bpf_htons(BPF_CORE_READ(sk, __sk_common.skc_num));
	if (!t->lport) /* the bound port is released before TCP's CLOSE is traced; inet_sport stays */
		t->lport = BPF_CORE_READ((struct inet_sock *)sk, inet_sport);
	t->rport = BPF_CORE_READ(sk, __sk_common.skc_dport);
	if (family == BW_AF_INET) {
		bpf_core_read(t->laddr, 4, &sk->__sk_common.skc_rcv_saddr);
		bpf_core_read(t->raddr, 4, &sk->__sk_common.skc_daddr);
	} else {
		bpf_core_read(t->laddr, 16, &sk->__sk_common.skc_v6_rcv_saddr);
		bpf_core_read(t->raddr, 16, &sk->__sk_common.skc_v6_daddr);
	}
}

/* Remote address from a user sockaddr (sendto's dest, recvfrom's source). */
static __always_inline int bw_read_sockaddr(const void *uaddr, struct bw_tuple *t)
{
	__u16 family = 0;

	if (!uaddr || bpf_probe_read_user(&family, sizeof(family), uaddr))
		return -1;
	if (family == BW_AF_INET) {
		bpf_probe_read_user(&t->rport, 2, uaddr + 2);
		__builtin_memset(t->raddr, 0, 16);
		bpf_probe_read_user(t->raddr, 4, uaddr + 4);
		return 0;
	}
	if (family == BW_AF_INET6) {
		bpf_probe_read_user(&t->rport, 2, uaddr + 2);
		bpf_probe_read_user(t->raddr, 16, uaddr + 8);
		return 0;
	}
	return -1;
}

/* msg_name of a user msghdr, and its first iovec. */
static __always_inline void bw_read_msghdr(const struct user_msghdr *umsg, void **name, void **base, __u64 *len)
{
	struct user_msghdr m = {};
	struct iovec iov = {};

	*name = 0;
	*base = 0;
	*len = 0;
	if (bpf_probe_read_user(&m, sizeof(m), umsg))
		return;
	*name = m.msg_name;
	if (m.msg_iovlen && !bpf_probe_read_user(&iov, sizeof(iov), m.msg_iov)) {
		*base = iov.iov_base;
		*len = iov.iov_len;
	}
}

/* ---- the datagrams of a send/recv syscall ------------------------------------ */

/* syscall numbers, set from Python's table for the architecture */
const volatile __s32 nr_sendto = -1, nr_recvfrom = -1, nr_sendmsg = -1, nr_recvmsg = -1;
const volatile __s32 nr_sendmmsg = -1, nr_recvmmsg = -1;

#define BW_MMSG_MAX 8

struct bw_dgram {
	void *name;      /* the peer's sockaddr in user memory, or NULL */
	void *base;      /* the payload (first iovec) */
	__u64 len;       /* bytes of this datagram */
	__u64 base_len;  /* bytes of it at base */
};

/* Datagram slots live in a per-CPU map: eight on the stack would not fit
 * beside the callers' own records (the BPF stack is 512 bytes). */
struct bw_dgrams {
	struct bw_dgram d[BW_MMSG_MAX];
};

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct bw_dgrams);
} bw_dgram_scratch SEC(".maps");

static __always_inline struct bw_dgram *bw_dgram_slots(void)
{
	__u32 zero = 0;
	struct bw_dgrams *g = bpf_map_lookup_elem(&bw_dgram_scratch, &zero);

	return g ? g->d : 0;
}

static __always_inline int bw_is_dgram_syscall(long nr)
{
	return nr == nr_sendto || nr == nr_recvfrom || nr == nr_sendmsg || nr == nr_recvmsg ||
	       nr == nr_sendmmsg || nr == nr_recvmmsg;
}

/* Fills d[] with the datagrams a send/recv syscall moved (it returned ret > 0);
 * returns how many, and whether they were sent. */
static __always_inline int bw_syscall_dgrams(struct pt_regs *regs, long nr, long ret,
					     struct bw_dgram d[BW_MMSG_MAX], int *sent)
{
	__u64 len = 0;

	*sent = nr == nr_sendto || nr == nr_sendmsg || nr == nr_sendmmsg;
	if (nr == nr_sendto || nr == nr_recvfrom) {
		d[0].name = (void *)bw_syscall_arg(regs, 4);
		d[0].base = (void *)bw_syscall_arg(regs, 1);
		d[0].len = d[0].base_len = ret;
		return 1;
	}
	if (nr == nr_sendmsg || nr == nr_recvmsg) {
		bw_read_msghdr((void *)bw_syscall_arg(regs, 1), &d[0].name, &d[0].base, &len);
		d[0].len = ret;
		d[0].base_len = len < (__u64)ret ? len : ret;
		return 1;
	}
	struct mmsghdr *vec = (void *)bw_syscall_arg(regs, 1);
	int n = 0;

	for (int i = 0; i < BW_MMSG_MAX; i++) {
		unsigned int mlen = 0;

		if (i >= ret)
			break;
		bw_read_msghdr(&vec[i].msg_hdr, &d[i].name, &d[i].base, &len);
		bpf_probe_read_user(&mlen, sizeof(mlen), &vec[i].msg_len);
		d[i].len = mlen;
		d[i].base_len = len < mlen ? len : mlen;
		n = i + 1;
	}
	return n;
}

#endif
