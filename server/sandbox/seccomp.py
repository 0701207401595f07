"""The seccomp filter bubblewrap loads before the sandboxed Python starts (`bwrap --seccomp FD`), compiled to BPF by
libseccomp through pyseccomp (a ctypes binding with libseccomp's own Python API; libseccomp2 is on every systemd
distribution).

Why a filter on top of the namespaces: the issue's escape was fork+setsid+execve through ctypes. Namespaces
already contain such a child (bubblewrap's PID 1 takes every process of the sandbox down with it), but refusing new
processes outright keeps one process per run, so the memory limit (RLIMIT_AS is per process) is a limit on the
whole run and a fork bomb ends at its first fork. Threads stay allowed (clone with CLONE_THREAD), bounded by
RLIMIT_NPROC and the address space. clone3 answers ENOSYS: its flags live in memory a filter cannot read, and glibc
falls back to clone. The rest is kernel attack surface Python code has no use for: namespaces and mounts, tracing
other processes, keyrings, BPF, perf, userfaultfd, io_uring, modules, and the like (what Flatpak and Docker's
default profiles refuse too). Syscalls of other ABIs (32-bit, x32) kill the process (libseccomp's default for a
foreign architecture), so they cannot go around the rules.
"""

from __future__ import annotations

import errno
import os
import tempfile

CLONE_THREAD = 0x00010000

REFUSED = (
    # new processes (clone without CLONE_THREAD below)
    "fork",
    "vfork",
    # namespaces and mounts
    "unshare",
    "setns",
    "mount",
    "umount2",
    "pivot_root",
    "chroot",
    "open_tree",
    "move_mount",
    "fsopen",
    "fsconfig",
    "fsmount",
    "fspick",
    "mount_setattr",
    # other processes' memory and descriptors
    "ptrace",
    "process_vm_readv",
    "process_vm_writev",
    "kcmp",
    "pidfd_getfd",
    # kernel surface with a history of exploits and no use here
    "bpf",
    "perf_event_open",
    "userfaultfd",
    "keyctl",
    "add_key",
    "request_key",
    "io_uring_setup",
    "io_uring_enter",
    "io_uring_register",
    "kexec_load",
    "kexec_file_load",
    "init_module",
    "finit_module",
    "delete_module",
    "reboot",
    "swapon",
    "swapoff",
    "acct",
    "syslog",
    "quotactl",
    "uselib",
    "lookup_dcookie",
    "name_to_handle_at",
    "open_by_handle_at",
    "iopl",
    "ioperm",
    "vhangup",
    "modify_ldt",
    "fanotify_init",
    "move_pages",
    "mbind",
    "set_mempolicy",
    "migrate_pages",
    "personality",
)


class SeccompUnavailable(Exception):
    pass


def filter_bpf() -> bytes:
    """The compiled filter, to be written to the fd given to `bwrap --seccomp`."""
    try:
        import pyseccomp as seccomp
    except (ImportError, RuntimeError, OSError) as exc:  # pyseccomp raises RuntimeError without libseccomp
        raise SeccompUnavailable(
            f"libseccomp is not usable ({exc}); install it (Debian/Ubuntu: apt install "
            "libseccomp2, Fedora: dnf install libseccomp)"
        ) from exc
    rules = seccomp.SyscallFilter(seccomp.ALLOW)
    refuse = seccomp.ERRNO(errno.EPERM)
    for name in REFUSED:
        try:
            rules.add_rule(refuse, name)
        except (OSError, ValueError, RuntimeError):
            continue  # not a syscall of this architecture: nothing to refuse
    rules.add_rule(refuse, "clone", seccomp.Arg(0, seccomp.MASKED_EQ, CLONE_THREAD, 0))
    rules.add_rule(seccomp.ERRNO(errno.ENOSYS), "clone3")
    with tempfile.TemporaryFile() as file:
        rules.export_bpf(file)
        file.seek(0)
        return file.read()


def bpf_pipe(bpf: bytes) -> int:
    """A pipe's read end holding the filter (bubblewrap reads it to the end). The caller passes it to bwrap and
    closes it. A pipe per run: a shared file would share its offset between concurrent runs."""
    read, write = os.pipe()
    try:
        os.write(write, bpf)  # a few hundred bytes: far below the pipe's buffer
    finally:
        os.close(write)
    return read
