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

#endif
