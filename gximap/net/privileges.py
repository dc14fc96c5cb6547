"""File-descriptor limit and the switch to ``running_identity``.

Public API:
    raise_fd_limit(wanted) -> int       0 = up to the hard limit; never lowers; returns the soft limit
    drop_privileges(identity, *, dumpable=False) -> None     identity "user" or "user:group"
    PrivilegeError

Start-up order (Gromox): bind listeners -> raise_fd_limit -> drop_privileges -> load TLS material.
As root the switch sets supplementary groups, then the gid, then the uid (real, effective and
saved alike, so root cannot be regained), sets no_new_privs (no set-uid binaries from filters) and
leaves the process non-dumpable by default: its memory holds passwords, which neither a core file
nor a ptrace from another process of the same user should reach.
"""

from __future__ import annotations

import grp
import logging
import os
import pwd
import resource

import prctl

__all__ = ["PrivilegeError", "drop_privileges", "raise_fd_limit"]

log = logging.getLogger("gximap.net")

_NR_OPEN_PATH = "/proc/sys/fs/nr_open"
_NR_OPEN_FALLBACK = 1024 * 1024


class PrivilegeError(Exception):
    """The configured identity cannot be assumed."""


def raise_fd_limit(wanted: int) -> int:
    """Raise RLIMIT_NOFILE's soft limit to ``wanted`` (0: as high as allowed). Root may also lift
    the hard limit. Never lowers anything. Returns the soft limit in effect afterwards."""
    if wanted < 0:
        raise ValueError("the wanted file descriptor limit cannot be negative")
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    ceiling = _kernel_ceiling()
    if hard == resource.RLIM_INFINITY:
        hard = ceiling  # the kernel refuses an infinite NOFILE soft limit
    target = hard if wanted == 0 else wanted
    if soft != resource.RLIM_INFINITY and target <= soft:
        return soft
    new_hard = hard
    if target > hard and os.geteuid() == 0:
        new_hard = min(target, ceiling)
    new_soft = min(target, new_hard)
    try:
        resource.setrlimit(resource.RLIMIT_NOFILE, (new_soft, max(new_hard, new_soft)))
    except (ValueError, OSError) as exc:
        log.warning("cannot raise the file descriptor limit to %d: %s", new_soft, exc)
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
        except (ValueError, OSError):
            pass
    soft = resource.getrlimit(resource.RLIMIT_NOFILE)[0]
    if wanted and soft < wanted:
        log.warning("file descriptor limit is %d, less than the %d wanted", soft, wanted)
    return soft


def _kernel_ceiling() -> int:
    try:
        with open(_NR_OPEN_PATH) as file:
            return int(file.read().strip())
    except (OSError, ValueError):
        return _NR_OPEN_FALLBACK


def resolve_identity(identity: str) -> tuple[pwd.struct_passwd, int, bool]:
    """``user`` or ``user:group`` (names or numeric ids) -> (the user, the group id: the named
    group's or the user's own, whether a group was named). PrivilegeError names what is
    missing. Shared by running_identity and unix_socket_owner, and checked at start-up."""
    user_name, _, group_name = identity.strip().partition(":")
    user_name, group_name = user_name.strip(), group_name.strip()
    if not user_name:
        raise PrivilegeError(f"{identity!r} names no user")
    try:
        user = pwd.getpwuid(int(user_name)) if user_name.isascii() and user_name.isdigit() else pwd.getpwnam(user_name)
    except (KeyError, OverflowError):
        raise PrivilegeError(f"no such user '{user_name}'") from None
    if not group_name:
        return user, user.pw_gid, False
    try:
        group = grp.getgrgid(int(group_name)) if group_name.isascii() and group_name.isdigit() else grp.getgrnam(group_name)
    except (KeyError, OverflowError):
        raise PrivilegeError(f"no such group '{group_name}'") from None
    return user, group.gr_gid, True


def drop_privileges(identity: str, *, dumpable: bool = False) -> None:
    """Become ``identity`` ("user" or "user:group"; names or numeric ids). Empty: no change."""
    identity = identity.strip()
    if not identity:
        return
    try:
        user, gid, group_named = resolve_identity(identity)
    except PrivilegeError as exc:
        raise PrivilegeError(f"running_identity: {exc}") from None

    if os.geteuid() != 0:
        if os.geteuid() == user.pw_uid and (not group_named or os.getegid() == gid):
            return
        log.warning(
            "running_identity %s ignored: not running as root, staying uid %d gid %d",
            identity, os.geteuid(), os.getegid(),
        )  # fmt: skip
        return

    try:
        os.initgroups(user.pw_name, gid)
        os.setresgid(gid, gid, gid)
        os.setresuid(user.pw_uid, user.pw_uid, user.pw_uid)
    except OSError as exc:
        raise PrivilegeError(f"running_identity {identity}: cannot switch: {exc.strerror or exc}") from None
    prctl.set_no_new_privs(1)
    # Changing uid already cleared the flag (with the usual fs.suid_dumpable=0); be explicit.
    prctl.set_dumpable(dumpable)

    if os.getresuid() != (user.pw_uid,) * 3 or os.getresgid() != (gid,) * 3:
        raise PrivilegeError(f"running_identity {identity}: the switch did not take effect")
    if user.pw_uid != 0:
        try:
            os.setuid(0)
        except PermissionError:
            pass
        else:
            raise PrivilegeError(f"running_identity {identity}: root could be regained")
    log.info("running as %s (uid %d, gid %d)", user.pw_name, user.pw_uid, gid)
