// SPDX-License-Identifier: GPL-2.0
/* Network sensor: TCP connect/accept/close (and every state change, opt-in)
 * from sock:inet_sock_set_state with owners recorded in process context, and
 * UDP flows aggregated in the kernel from the send/recv syscalls. */
#include "bw_filter.bpf.h"
#include "bw_sock.bpf.h"
#include "network.h"

BW_LAYOUT(struct bw_tcp_event, tcp_event);
BW_LAYOUT(struct bw_udp_event, udp_event);
BW_LAYOUT(enum bw_tcp_kind, tcp_kind);
BW_LAYOUT(enum bw_bytes_source, bytes_source);

#define TCP_ESTABLISHED 1
#define TCP_SYN_SENT 2
#define TCP_SYN_RECV 3
#define TCP_FIN_WAIT1 4
#define TCP_CLOSE 7
#define TCP_CLOSE_WAIT 8
#define TCP_LISTEN 10

const volatile __u32 emit_tcp = 0xffffffff; /* bit (1 << kind) */
const volatile __u32 emit_udp = 1;
const volatile __u32 count_app_bytes = 1; /* sock_send/recv_length exist (>= 6.2) */
/* syscall numbers, from Python's table (the send/recv ones in bw_sock.bpf.h) */
const volatile __s32 nr_accept = -1, nr_accept4 = -1;

/* Port filter: bw_ports maps a port (host order) to BW_PORT_ALLOW or
 * BW_PORT_DENY; a flow passes if either port is allowed (when an allow list
 * exists) and neither is denied. */
#define BW_PORT_ALLOW 1
#define BW_PORT_DENY 2
const volatile __u32 flt_port = 0; /* BW_PORT_ALLOW | BW_PORT_DENY: which lists exist */

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 65536);
	__type(key, __u16);
	__type(value, __u8);
} bw_ports SEC(".maps");

static __always_inline int ports_pass(const struct bw_tuple *t)
{
	if (!flt_port)
		return 1;
	__u16 lp = bpf_ntohs(t->lport), rp = bpf_ntohs(t->rport);
	__u8 *a = bpf_map_lookup_elem(&bw_ports, &lp);
	__u8 *b = bpf_map_lookup_elem(&bw_ports, &rp);
	int allowed = (a && *a == BW_PORT_ALLOW) || (b && *b == BW_PORT_ALLOW);
	int denied = (a && *a == BW_PORT_DENY) || (b && *b == BW_PORT_DENY);

	if ((flt_port & BW_PORT_ALLOW) && !allowed)
		return 0;
	return !denied;
}

struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, 65536);
	__type(key, __u64);  /* struct sock * */
	__type(value, struct bw_sock_info);
} bw_socks SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 4096);
	__type(key, struct bw_listen_key);
	__type(value, struct bw_sock_info);
} bw_listeners SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 16384);
	__type(key, struct bw_udp_key);
	__type(value, struct bw_udp_stats);
} bw_udp SEC(".maps");

/* Flows each process started: at exit the table is scanned only for processes
 * that have some. Flows ended as idle (by Python) leave the count high, which
 * costs a scan, never a flow. */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 16384);
	__type(key, __u32);
	__type(value, __s64);
} bw_udp_owners SEC(".maps");

static __always_inline void set_owner(struct bw_sock_info *i, struct task_struct *task)
{
	i->owner_pid = task->tgid;
	i->owner_tid = task->pid;
	i->owner_uid = bw_task_uid(task);
	i->cgroup_id = bpf_get_current_cgroup_id();
	bw_task_comm(i->comm, task);
}

#define BW_SEND_SHUTDOWN 2

/* The bytes the application sent and received, from TCP's own per-socket
 * totals: bytes_acked counts the sequence numbers the peer acknowledged and
 * bytes_received those that arrived. Both count a FIN (ours once acked, the
 * peer's once received), and an active open counts its SYN too (its snd_una
 * starts at the ISN; a passive open's starts after it). Taking those out leaves
 * the payload, exactly, for connections that end with FINs. */
static __always_inline void tcp_payload_bytes(const struct sock *sk, const struct tcp_sock *tp,
					      const struct bw_sock_info *who, struct bw_tcp_event *e)
{
	__u64 acked = BPF_CORE_READ(tp, bytes_acked), rcvd = BPF_CORE_READ(tp, bytes_received);
	__u32 shutdown = BPF_CORE_READ_BITFIELD_PROBED(sk, sk_shutdown);
	unsigned long flags = BPF_CORE_READ(sk, __sk_common.skc_flags);
	int done = bpf_core_enum_value(enum sock_flags, SOCK_DONE);  /* set when the peer's FIN arrived */

	if (who->role == BW_ROLE_CLIENT && acked)
		acked--;
	if ((shutdown & BW_SEND_SHUTDOWN) && acked &&
	    BPF_CORE_READ(tp, snd_una) == BPF_CORE_READ(tp, write_seq))
		acked--;
	if (((flags >> done) & 1) && rcvd)
		rcvd--;
	e->bytes_sent = acked;
	e->bytes_received = rcvd;
	e->bytes_from = BW_BYTES_TCP_EXACT;
}

static __always_inline void emit_tcp_event(const struct sock *sk, struct bw_sock_info *who, __u32 kind,
					   int old, int new)
{
	if (!(emit_tcp & (1u << kind)))
		return;
	struct bw_tcp_event *e = bw_reserve(sizeof(*e));
	struct tcp_sock *tp = (struct tcp_sock *)sk;
	__u64 now = bpf_ktime_get_boot_ns();

	if (!e)
		return;
	e->hdr.ts_boot_ns = now;
	e->hdr.type = BW_EV_TCP;
	e->hdr.pid = who->owner_pid;
	e->hdr.tid = who->owner_tid;
	e->hdr.cpu = bpf_get_smp_processor_id();
	bw_sock_tuple(sk, &e->t);
	if (e->t.lport && e->t.rport)
		who->known = e->t;
	else if (who->known.lport)
		e->t = who->known;
	if (!ports_pass(&e->t)) {
		bpf_ringbuf_discard(e, BPF_RB_NO_WAKEUP);
		return;
	}
	e->who = *who;
	e->sk = (__u64)sk;
	e->kind = kind;
	e->err = BPF_CORE_READ(sk, sk_err);
	e->old_state = old;
	e->new_state = new;
	e->latency_ns = who->established_ns ? who->established_ns - who->start_ns : 0;
	e->duration_ns = now - (who->established_ns ? who->established_ns : who->start_ns);
	if (who->counted) {
		e->bytes_sent = who->app_sent;
		e->bytes_received = who->app_received;
		e->bytes_from = BW_BYTES_APP;
	} else {
		tcp_payload_bytes(sk, tp, who, e);
	}
	e->retransmits = BPF_CORE_READ(tp, total_retrans);
	e->segs_in = BPF_CORE_READ(tp, segs_in);
	e->segs_out = BPF_CORE_READ(tp, segs_out);
	bw_submit(e, sizeof(*e));
}

/* The ports are known while a connection is established; the local one is
 * released before it closes, so the close event takes them from here. */
static __always_inline void remember_tuple(const struct sock *sk, struct bw_sock_info *info)
{
	struct bw_tuple t;

	bw_sock_tuple(sk, &t);
	if (t.lport && t.rport)
		info->known = t;
}

static __always_inline void listen_key(const struct sock *sk, struct bw_listen_key *k)
{
	k->port = BPF_CORE_READ(sk, __sk_common.skc_num);
	k->family = BPF_CORE_READ(sk, __sk_common.skc_family);
}

SEC("tp_btf/inet_sock_set_state")
int BPF_PROG(bw_net_tcp_state, const struct sock *sk, const int old, const int new)
{
	if (BPF_CORE_READ(sk, sk_protocol) != BW_IPPROTO_TCP)
		return 0;
	__u64 key = (__u64)sk;
	struct bw_sock_info *info;
	struct bw_listen_key lk;

	if (new == TCP_LISTEN) {
		/* listen(): process context, the caller owns the listener */
		struct task_struct *task = (struct task_struct *)bpf_get_current_task_btf();
		struct bw_sock_info fresh = {};

		if (!in_scope(task->tgid) || !matches(task))
			return 0;
		set_owner(&fresh, task);
		fresh.role = BW_ROLE_LISTENER;
		fresh.start_ns = bpf_ktime_get_boot_ns();
		bpf_map_update_elem(&bw_socks, &key, &fresh, BPF_ANY);
		listen_key(sk, &lk);
		bpf_map_update_elem(&bw_listeners, &lk, &fresh, BPF_ANY);
		info = bpf_map_lookup_elem(&bw_socks, &key);
		if (info)
			emit_tcp_event(sk, info, BW_TCP_STATE, old, new);
		return 0;
	}
	if (old == TCP_LISTEN && new == TCP_SYN_RECV) {
		/* a connection the listener received (softirq): its owner, until accept() */
		struct bw_sock_info *l;

		listen_key(sk, &lk);
		l = bpf_map_lookup_elem(&bw_listeners, &lk);
		if (!l)
			return 0;
		struct bw_sock_info fresh = *l; /* the owner; a listener has no bytes, ports or closer */

		fresh.role = BW_ROLE_SERVER;
		fresh.counted = count_app_bytes;
		fresh.start_ns = bpf_ktime_get_boot_ns();
		bpf_map_update_elem(&bw_socks, &key, &fresh, BPF_ANY);
		info = bpf_map_lookup_elem(&bw_socks, &key);
		if (info) {
			remember_tuple(sk, info);
			emit_tcp_event(sk, info, BW_TCP_STATE, old, new);
		}
		return 0;
	}
	if (old == TCP_LISTEN) {
		listen_key(sk, &lk);
		bpf_map_delete_elem(&bw_listeners, &lk);
	}

	if (new == TCP_SYN_SENT) {
		/* connect(): process context, the caller owns the socket */
		struct task_struct *task = (struct task_struct *)bpf_get_current_task_btf();
		struct bw_sock_info fresh = {};

		if (!in_scope(task->tgid) || !matches(task))
			return 0;
		set_owner(&fresh, task);
		fresh.role = BW_ROLE_CLIENT;
		fresh.counted = count_app_bytes;
		fresh.start_ns = bpf_ktime_get_boot_ns();
		bpf_map_update_elem(&bw_socks, &key, &fresh, BPF_ANY);
		info = bpf_map_lookup_elem(&bw_socks, &key);
		if (info)
			emit_tcp_event(sk, info, BW_TCP_STATE, old, new);
		return 0;
	}
	if (new == TCP_ESTABLISHED && old == TCP_SYN_RECV) {
		/* a passive open, in softirq: the owner is known at accept() */
		info = bpf_map_lookup_elem(&bw_socks, &key);
		if (info) { /* seen at SYN_RECV: its listener is in scope */
			info->established_ns = bpf_ktime_get_boot_ns();
			remember_tuple(sk, info);
			emit_tcp_event(sk, info, BW_TCP_STATE, old, new);
			return 0;
		}
		struct bw_sock_info fresh = { .role = BW_ROLE_SERVER, .counted = count_app_bytes };

		fresh.start_ns = fresh.established_ns = bpf_ktime_get_boot_ns();
		bw_sock_tuple(sk, &fresh.known);
		bpf_map_update_elem(&bw_socks, &key, &fresh, BPF_NOEXIST);
		return 0;
	}
	info = bpf_map_lookup_elem(&bw_socks, &key);
	if (!info)
		return 0;
	if (info->owner_pid)
		emit_tcp_event(sk, info, BW_TCP_STATE, old, new);
	if (old == TCP_SYN_SENT) {
		if (new == TCP_ESTABLISHED) {
			info->established_ns = bpf_ktime_get_boot_ns();
			remember_tuple(sk, info);
			emit_tcp_event(sk, info, BW_TCP_CONNECT, old, new);
			return 0;
		}
		if (new == TCP_CLOSE) {
			emit_tcp_event(sk, info, BW_TCP_CONNECT, old, new);
			bpf_map_delete_elem(&bw_socks, &key);
		}
		return 0;
	}
	if (old == TCP_ESTABLISHED && new == TCP_FIN_WAIT1 && !info->closer)
		info->closer = BW_CLOSER_LOCAL;
	else if (old == TCP_ESTABLISHED && new == TCP_CLOSE_WAIT && !info->closer)
		info->closer = BW_CLOSER_REMOTE;
	/* the summary waits for tcp_destroy_sock: after TCP's CLOSE the
	 * application may still be reading what arrived before the FIN */
	return 0;
}

SEC("tp_btf/tcp_destroy_sock")
int BPF_PROG(bw_net_tcp_destroy, struct sock *sk)
{
	__u64 key = (__u64)sk;
	struct bw_sock_info *info = bpf_map_lookup_elem(&bw_socks, &key);

	if (!info)
		return 0;
	if (info->owner_pid && info->established_ns)
		emit_tcp_event(sk, info, BW_TCP_CLOSE, TCP_CLOSE, TCP_CLOSE);
	bpf_map_delete_elem(&bw_socks, &key);
	return 0;
}

/* ---- application bytes: exact, whatever TCP adds (SYN, FIN, retransmits) ---- */

static __always_inline void count_app(struct sock *sk, int ret, int sent)
{
	if (ret <= 0 || BPF_CORE_READ(sk, sk_protocol) != BW_IPPROTO_TCP)
		return;
	__u64 key = (__u64)sk;
	struct bw_sock_info *info = bpf_map_lookup_elem(&bw_socks, &key);

	if (!info)
		return;
	if (sent)
		__sync_fetch_and_add(&info->app_sent, ret);
	else
		__sync_fetch_and_add(&info->app_received, ret);
}

SEC("tp_btf/sock_send_length")
int BW_CHAINED(sock_send_length, bw_net_send_len, struct sock *sk, int ret, int flags)
{
	count_app(sk, ret, 1);
	return 0;
}

SEC("tp_btf/sock_recv_length")
int BW_CHAINED(sock_recv_length, bw_net_recv_len, struct sock *sk, int ret, int flags)
{
	if (!(flags & BW_MSG_PEEK))
		count_app(sk, ret, 0);
	return 0;
}

/* ---- accept and UDP, from syscall exits ------------------------------------- */

static __always_inline void on_accept(struct task_struct *task, long fd)
{
	struct sock *sk = bw_fd_sock(task, fd);

	if (!sk || BPF_CORE_READ(sk, sk_protocol) != BW_IPPROTO_TCP)
		return;
	__u64 key = (__u64)sk;
	struct bw_sock_info *info = bpf_map_lookup_elem(&bw_socks, &key);

	if (!info) {
		/* established before we started: bytes before now are not ours to count */
		struct bw_sock_info fresh = { .role = BW_ROLE_SERVER };

		fresh.start_ns = fresh.established_ns = bpf_ktime_get_boot_ns();
		bpf_map_update_elem(&bw_socks, &key, &fresh, BPF_ANY);
		info = bpf_map_lookup_elem(&bw_socks, &key);
		if (!info)
			return;
	}
	set_owner(info, task);
	remember_tuple(sk, info);
	emit_tcp_event(sk, info, BW_TCP_ACCEPT, TCP_ESTABLISHED, TCP_ESTABLISHED);
}

static __always_inline void emit_udp_event(struct bw_udp_key *key, struct bw_udp_stats *st, __u32 phase)
{
	struct bw_udp_event *e = bw_reserve(sizeof(*e));

	if (!e)
		return;
	e->hdr.ts_boot_ns = bpf_ktime_get_boot_ns();
	e->hdr.type = BW_EV_UDP;
	e->hdr.pid = key->tgid;
	e->hdr.tid = 0;
	e->hdr.cpu = bpf_get_smp_processor_id();
	e->key = *key;
	e->st = *st;
	e->phase = phase;
	e->ev_pad = 0;
	bw_submit(e, sizeof(*e));
}

/* One datagram of len bytes between sk and the remote in *t. */
static __always_inline void count_udp(struct task_struct *task, struct bw_udp_key *key, __u64 len, int sent)
{
	struct bw_udp_stats *st = bpf_map_lookup_elem(&bw_udp, key);

	if (!st) {
		if (!ports_pass(&key->t))
			return;
		struct bw_udp_stats fresh = {};

		fresh.first_ns = bpf_ktime_get_boot_ns();
		fresh.cgroup_id = bpf_get_current_cgroup_id();
		fresh.uid = bw_task_uid(task);
		bw_task_comm(fresh.comm, task);
		if (bpf_map_update_elem(&bw_udp, key, &fresh, BPF_NOEXIST) == 0) {
			__s64 one = 1, *n = bpf_map_lookup_elem(&bw_udp_owners, &key->tgid);

			if (n)
				__sync_fetch_and_add(n, 1);
			else
				bpf_map_update_elem(&bw_udp_owners, &key->tgid, &one, BPF_NOEXIST);
			emit_udp_event(key, &fresh, BW_UDP_START);
		}
		st = bpf_map_lookup_elem(&bw_udp, key);
		if (!st)
			return;
	}
	if (sent) {
		__sync_fetch_and_add(&st->bytes_sent, len);
		__sync_fetch_and_add(&st->packets_sent, 1);
	} else {
		__sync_fetch_and_add(&st->bytes_received, len);
		__sync_fetch_and_add(&st->packets_received, 1);
	}
	st->last_ns = bpf_ktime_get_boot_ns();
}

/* Fills key->t for a datagram on sk to/from the user sockaddr `addr`
 * (NULL for a connected socket). */
static __always_inline int udp_key(struct sock *sk, const void *addr, struct bw_udp_key *key)
{
	bw_sock_tuple(sk, &key->t);
	if (key->t.rport == 0 && bw_read_sockaddr(addr, &key->t))
		return -1;
	return 0;
}

struct udp_each_ctx {
	struct task_struct *task;
	struct sock *sk;
	struct bw_dgram *d;
	__u32 tgid;
	int n;
	int sent;
};

/* One datagram of a send/recv call: a bpf_loop callback, so the verifier
 * walks its body once instead of once per possible datagram (sendmmsg). */
static long udp_each(__u64 i, struct udp_each_ctx *c)
{
	/* locals: CO-RE must not relocate the fields of our own context */
	struct bw_dgram *d = c->d;
	struct bw_udp_key key = { .tgid = c->tgid };

	if (i >= (__u64)c->n)
		return 1;
	d += i & (BW_MMSG_MAX - 1);
	if (udp_key(c->sk, d->name, &key) == 0)
		count_udp(c->task, &key, d->len, c->sent);
	return 0;
}

static __always_inline void on_udp(struct task_struct *task, struct pt_regs *regs, long nr, long ret)
{
	struct sock *sk = bw_fd_sock(task, (int)bw_syscall_arg(regs, 0));

	if (!sk || BPF_CORE_READ(sk, sk_protocol) != BW_IPPROTO_UDP)
		return;
	struct bw_dgram *d = bw_dgram_slots();
	int sent = 0;

	if (!d)
		return;
	struct udp_each_ctx c = { .task = task, .sk = sk, .d = d, .tgid = task->tgid };

	c.n = bw_syscall_dgrams(regs, nr, ret, d, &sent);
	c.sent = sent;
	bpf_loop(BW_MMSG_MAX, udp_each, &c, 0);
}

SEC("tp_btf/sys_exit")
int BW_CHAINED(sys_exit, bw_net_sys_exit, struct pt_regs *regs, long ret)
{
	long nr = bw_syscall_nr(regs);
	int accept = nr == nr_accept || nr == nr_accept4;
	int udp = bw_is_dgram_syscall(nr);

	if ((!accept && !udp) || ret < 0)
		return 0;
	struct task_struct *task = (struct task_struct *)bpf_get_current_task_btf();

	if (!in_scope(task->tgid) || !matches(task))
		return 0;
	if (accept)
		on_accept(task, ret);
	else if (emit_udp && ret > 0)
		on_udp(task, regs, nr, ret);
	return 0;
}

/* Flows that go idle are ended by Python (atomic lookup-and-delete). */
struct udp_flush_ctx {
	__u32 tgid;
};

static long udp_flush_one(struct bpf_map *map, struct bw_udp_key *key, struct bw_udp_stats *st,
			  struct udp_flush_ctx *c)
{
	if (key->tgid != c->tgid)
		return 0;
	emit_udp_event(key, st, BW_UDP_END);
	bpf_map_delete_elem(map, key);
	return 0;
}

/* process exit: its UDP flows end */
SEC("tp_btf/sched_process_exit")
int BPF_PROG(bw_net_proc_exit, struct task_struct *task)
{
	if (BPF_CORE_READ(task, signal, live.counter) != 0)
		return 0;
	struct udp_flush_ctx c = { .tgid = BPF_CORE_READ(task, tgid) };

	if (!bpf_map_lookup_elem(&bw_udp_owners, &c.tgid))
		return 0;
	bpf_map_delete_elem(&bw_udp_owners, &c.tgid);
	bpf_for_each_map_elem(&bw_udp, udp_flush_one, &c, 0);
	return 0;
}
