"""Syscalls of the architectures bpfwatch runs on: numbers (generated from the
kernel UAPI headers into syscall_tables.py) and a category for every one."""

from __future__ import annotations

import platform
from functools import lru_cache

from bpfwatch.errors import BpfwatchError
from bpfwatch.syscall_tables import ARM64, X86_64

TABLES = {"x86_64": X86_64, "aarch64": ARM64}
HOST = platform.machine()

# Every syscall of both tables is listed in exactly one category (a test holds
# this), so a new syscall is classified on purpose, never by default.
CATEGORIES: dict[str, frozenset[str]] = {k: frozenset(v.split()) for k, v in {
    "file_io": """
        read write open close stat fstat lstat newfstatat statx lseek pread64 pwrite64 readv writev preadv
        pwritev preadv2 pwritev2 access faccessat faccessat2 select pselect6 poll ppoll dup dup2 dup3 fcntl
        flock fsync fdatasync sync syncfs sync_file_range truncate ftruncate getdents getdents64 getcwd chdir
        fchdir rename renameat renameat2 mkdir mkdirat rmdir creat link linkat unlink unlinkat symlink
        symlinkat readlink readlinkat utime utimes futimesat utimensat mknod mknodat statfs fstatfs ustat
        sendfile splice tee vmsplice copy_file_range fallocate fadvise64 readahead openat openat2
        open_by_handle_at name_to_handle_at ioctl epoll_create epoll_create1 epoll_ctl epoll_wait
        epoll_pwait epoll_pwait2 inotify_init inotify_init1 inotify_add_watch inotify_rm_watch
        fanotify_init fanotify_mark io_setup io_destroy io_submit io_cancel io_getevents io_pgetevents
        io_uring_setup io_uring_enter io_uring_register getxattr lgetxattr fgetxattr setxattr lsetxattr
        fsetxattr listxattr llistxattr flistxattr removexattr lremovexattr fremovexattr setxattrat getxattrat
        listxattrat removexattrat close_range cachestat file_getattr file_setattr
    """,
    "memory": """
        mmap munmap mprotect mremap msync mincore madvise brk mlock mlock2 munlock mlockall munlockall
        remap_file_pages mbind set_mempolicy get_mempolicy migrate_pages move_pages pkey_mprotect pkey_alloc
        pkey_free membarrier process_madvise process_mrelease memfd_create memfd_secret userfaultfd
        set_mempolicy_home_node map_shadow_stack mseal modify_ldt
    """,
    "process": """
        clone clone3 fork vfork execve execveat exit exit_group wait4 waitid getpid getppid gettid getpgid
        setpgid getpgrp getsid setsid prctl arch_prctl set_tid_address unshare setns personality sched_yield
        sched_setaffinity sched_getaffinity sched_setparam sched_getparam sched_setscheduler
        sched_getscheduler sched_get_priority_max sched_get_priority_min sched_rr_get_interval sched_setattr
        sched_getattr getpriority setpriority getrlimit setrlimit prlimit64 getrusage pidfd_open pidfd_getfd
        process_vm_readv process_vm_writev kcmp rseq set_robust_list get_robust_list ioprio_set ioprio_get
        uselib vhangup
    """,
    "network": """
        socket socketpair bind listen accept accept4 connect getsockname getpeername sendto recvfrom sendmsg
        recvmsg sendmmsg recvmmsg shutdown setsockopt getsockopt
    """,
    "time": """
        nanosleep clock_nanosleep clock_gettime clock_settime clock_getres clock_adjtime gettimeofday
        settimeofday time times adjtimex alarm getitimer setitimer timer_create timer_settime timer_gettime
        timer_getoverrun timer_delete timerfd_create timerfd_settime timerfd_gettime
    """,
    "ipc": """
        pipe pipe2 msgget msgsnd msgrcv msgctl semget semop semtimedop semctl shmget shmat shmdt shmctl
        mq_open mq_unlink mq_timedsend mq_timedreceive mq_notify mq_getsetattr eventfd eventfd2 futex
        futex_waitv futex_wake futex_wait futex_requeue
    """,
    "security": """
        chmod fchmod fchmodat fchmodat2 chown fchown lchown fchownat umask setuid setgid setreuid setregid
        setresuid setresgid getuid geteuid getgid getegid getresuid getresgid setfsuid setfsgid getgroups
        setgroups capget capset seccomp ptrace keyctl add_key request_key landlock_create_ruleset
        landlock_add_rule landlock_restrict_self lsm_get_self_attr lsm_set_self_attr lsm_list_modules chroot
    """,
    "signal": """
        rt_sigaction rt_sigprocmask rt_sigreturn rt_sigpending rt_sigtimedwait rt_sigqueueinfo
        rt_tgsigqueueinfo rt_sigsuspend sigaltstack kill tkill tgkill signalfd signalfd4 pause restart_syscall
        pidfd_send_signal
    """,
    "system": """
        uname sysinfo syslog reboot sethostname setdomainname getrandom ioperm iopl init_module finit_module
        delete_module create_module get_kernel_syms query_module kexec_load kexec_file_load mount umount2
        pivot_root swapon swapoff sysfs _sysctl nfsservctl quotactl quotactl_fd acct bpf perf_event_open
        getcpu lookup_dcookie fsopen fsconfig fsmount fspick open_tree move_mount mount_setattr statmount
        listmount open_tree_attr
    """,
    # obsolete, reserved or unimplemented entries of the tables
    "other": """
        afs_syscall tuxcall security putpmsg getpmsg vserver epoll_ctl_old epoll_wait_old set_thread_area
        get_thread_area
    """,
}.items()}
# waiting for a child to end: time the tree spends on its own work elsewhere,
# so reports show it apart from the tree's blocking
CHILD_WAIT = frozenset({"wait4", "waitid", "waitpid"})

_CATEGORY_OF = {name: cat for cat, names in CATEGORIES.items() for name in names}


@lru_cache(maxsize=4)
def table(machine: str | None = None) -> dict[str, int]:
    """name -> number for the running (or the given) architecture."""
    machine = machine or HOST
    try:
        return {name: nr for nr, name in TABLES[machine].items()}
    except KeyError:
        raise BpfwatchError(f"no syscall table for {machine}: supported are {', '.join(TABLES)}") from None


@lru_cache(maxsize=2048)  # decoders name a syscall per event: half the cost of the two lookups
def name_of(nr: int, machine: str | None = None) -> str:
    return TABLES.get(machine or HOST, {}).get(nr) or f"syscall_{nr}"


def category(name: str) -> str:
    return _CATEGORY_OF.get(name, "other")
