#!/usr/bin/python3
"""sandbox.py FAMILIES CMD...: exec CMD under the seccomp part of the systemd
units' sandbox, reproduced without systemd (PID 1 here is not systemd):

- RestrictAddressFamilies=FAMILIES (e.g. "AF_INET AF_INET6 AF_NETLINK
  AF_UNIX"): socket() and socketpair() of any other family fail with
  EAFNOSUPPORT, as systemd makes them;
- MemoryDenyWriteExecute=yes: mmap() of memory both writable and executable
  and mprotect()/pkey_mprotect() adding PROT_EXEC fail with EPERM;
- SystemCallFilter=~@privileged @resources (the calls a network daemon could
  misuse: mount, reboot, modules, swap, setrlimit, ...): EPERM.

The caller drops to the service user with no new privileges first (setpriv
--no-new-privs), which lets an unprivileged process load the filter.
"""
import errno
import os
import socket
import sys

import seccomp

AF_MAX = 46  # glibc's AF_MAX on Linux 6.x


def main():
    if len(sys.argv) < 3:
        sys.exit("usage: sandbox.py 'AF_INET AF_INET6 ...' CMD [ARGS...]")
    allowed = {int(getattr(socket, name)) for name in sys.argv[1].split()}
    f = seccomp.SyscallFilter(defaction=seccomp.ALLOW)
    for call in ("socket", "socketpair"):
        for fam in range(AF_MAX + 1):
            if fam not in allowed:
                f.add_rule(seccomp.ERRNO(errno.EAFNOSUPPORT), call, seccomp.Arg(0, seccomp.EQ, fam))
        f.add_rule(seccomp.ERRNO(errno.EAFNOSUPPORT), call, seccomp.Arg(0, seccomp.GT, AF_MAX))
    wx = 0x2 | 0x4  # PROT_WRITE | PROT_EXEC
    f.add_rule(seccomp.ERRNO(errno.EPERM), "mmap", seccomp.Arg(2, seccomp.MASKED_EQ, wx, wx))
    f.add_rule(seccomp.ERRNO(errno.EPERM), "mprotect", seccomp.Arg(2, seccomp.MASKED_EQ, 0x4, 0x4))
    f.add_rule(seccomp.ERRNO(errno.EPERM), "pkey_mprotect",
               seccomp.Arg(2, seccomp.MASKED_EQ, 0x4, 0x4))
    for call in ("mount", "umount2", "pivot_root", "chroot", "reboot", "swapon", "swapoff",
                 "init_module", "finit_module", "delete_module", "kexec_load", "acct",
                 "settimeofday", "clock_settime", "sethostname", "setdomainname",
                 "sched_setscheduler", "ioperm", "iopl", "bpf", "perf_event_open"):
        f.add_rule(seccomp.ERRNO(errno.EPERM), call)
    f.load()
    os.execvp(sys.argv[2], sys.argv[2:])


if __name__ == "__main__":
    main()
