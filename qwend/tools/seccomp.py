"""A seccomp filter for the sandbox, compiled to classic BPF and handed to bubblewrap (`--seccomp FD`).

bubblewrap isolates but has no syscall policy of its own. This filter adds what namespaces and rlimits
cannot: no new processes (threads are fine), which is the only dependable fork-bomb stop when the daemon
runs as root (RLIMIT_NPROC does not apply to root), and no kernel attack surface a Python snippet never
needs (ptrace, mount, namespaces, bpf, keyrings, io_uring, ...). An unknown architecture gets no filter;
the namespaces, rlimits and wall timeout still hold.
"""

from __future__ import annotations

import errno
import platform
import struct

_ALLOW = 0x7FFF0000
_ERRNO = 0x00050000
_KILL_PROCESS = 0x80000000
_CLONE_THREAD = 0x00010000
# BPF opcodes: load word at absolute offset, jump-if-equal, jump-if-greater-or-equal, jump-if-bits-set, return.
_LD, _JEQ, _JGE, _JSET, _RET = 0x20, 0x15, 0x35, 0x45, 0x06
# struct seccomp_data: int nr; u32 arch; u64 instruction_pointer; u64 args[6]
_NR, _ARCH, _ARG0 = 0, 4, 16

# name: (x86_64, aarch64); None where the architecture has no such call.
_SYSCALLS = {
    "fork": (57, None), "vfork": (58, None), "clone": (56, 220), "clone3": (435, 435),
    "ptrace": (101, 117), "mount": (165, 40), "umount2": (166, 39), "pivot_root": (155, 41),
    "chroot": (161, 51), "unshare": (272, 97), "setns": (308, 268), "bpf": (321, 280),
    "keyctl": (250, 219), "add_key": (248, 217), "request_key": (249, 218), "userfaultfd": (323, 282),
    "perf_event_open": (298, 241), "kexec_load": (246, 104), "kexec_file_load": (320, 294),
    "io_uring_setup": (425, 425), "io_uring_enter": (426, 426), "io_uring_register": (427, 427),
    "personality": (135, 92), "process_vm_writev": (311, 271), "open_by_handle_at": (304, 265),
}
_ARCHES = {"x86_64": (0, 0xC000003E), "aarch64": (1, 0xC00000B7)}
_DENIED = ("fork", "vfork", "ptrace", "mount", "umount2", "pivot_root", "chroot", "unshare", "setns", "bpf",
           "keyctl", "add_key", "request_key", "userfaultfd", "perf_event_open", "kexec_load", "kexec_file_load",
           "personality", "process_vm_writev", "open_by_handle_at")
# ENOSYS, not EPERM: glibc then falls back from clone3 to clone, whose flags the filter can read.
_UNAVAILABLE = ("clone3", "io_uring_setup", "io_uring_enter", "io_uring_register")


def sandbox_filter(machine: str | None = None) -> bytes | None:
    """The filter as an array of `struct sock_filter`, or None on an architecture it does not know."""
    arch = _ARCHES.get(machine or platform.machine())
    if arch is None:
        return None
    column, audit_arch = arch

    def nr(name: str) -> int | None:
        return _SYSCALLS[name][column]

    # (opcode, k, jump-if-true label, jump-if-false label); labels resolve to relative offsets below.
    program: list[tuple[int, int, str | None, str | None]] = [
        (_LD, _ARCH, None, None),
        (_JEQ, audit_arch, None, "kill"),
        (_LD, _NR, None, None),
    ]
    if column == 0:  # x32 system calls share the x86_64 audit arch; refuse them all
        program.append((_JGE, 0x40000000, "eperm", None))
    program += [(_JEQ, n, "eperm", None) for n in map(nr, _DENIED) if n is not None]
    program += [(_JEQ, n, "enosys", None) for n in map(nr, _UNAVAILABLE) if n is not None]
    program += [
        (_JEQ, nr("clone"), None, "allow"),
        (_LD, _ARG0, None, None),  # clone flags (low word); a thread carries CLONE_THREAD
        (_JSET, _CLONE_THREAD, "allow", "eperm"),
    ]
    labels = {"allow": _ALLOW, "eperm": _ERRNO | errno.EPERM, "enosys": _ERRNO | errno.ENOSYS,
              "kill": _KILL_PROCESS}
    at = {name: len(program) + i for i, name in enumerate(labels)}

    def offset(index: int, label: str | None) -> int:
        return 0 if label is None else at[label] - index - 1

    code = b"".join(
        struct.pack("=HBBI", op, offset(i, jt), offset(i, jf), k) for i, (op, k, jt, jf) in enumerate(program)
    )
    return code + b"".join(struct.pack("=HBBI", _RET, 0, 0, value) for value in labels.values())
