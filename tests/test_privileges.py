"""Privilege drop and the fd limit. Anything that changes the process runs in a child process."""

from __future__ import annotations

import json
import os
import resource
import subprocess
import sys
import textwrap

import pytest

from gximap.net.privileges import PrivilegeError, drop_privileges, raise_fd_limit

needs_root = pytest.mark.skipif(os.geteuid() != 0, reason="needs root")

# The interpreter may live where the dropped identity cannot read (here: under /root), so the
# child imports everything before it switches.
PRELUDE = "import json, logging, os, resource, prctl\nimport gximap.net.privileges\n"
REPORT = """
print(json.dumps({
    "resuid": os.getresuid(), "resgid": os.getresgid(), "groups": sorted(os.getgroups()),
    "no_new_privs": prctl.get_no_new_privs(), "dumpable": bool(prctl.get_dumpable()),
}))
"""


def run_child(code: str, *, report: bool = True) -> tuple[dict[str, object], str]:
    """Run Python code in a child (followed by REPORT unless told otherwise); returns the JSON
    it printed last, and its stderr."""
    completed = subprocess.run(
        [sys.executable, "-c", PRELUDE + textwrap.dedent(code) + (REPORT if report else "")],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert completed.returncode == 0, completed.stderr
    return json.loads(completed.stdout.strip().splitlines()[-1]), completed.stderr


@needs_root
@pytest.mark.root
@pytest.mark.parametrize("identity", ["nobody", "nobody:nogroup", "65534:65534"])
def test_drop_to_nobody(identity: str) -> None:
    report, _ = run_child(
        f"""
        import os
        from gximap.net.privileges import drop_privileges
        os.setgroups([0, 1, 2])  # these must not survive the switch
        drop_privileges({identity!r})
        """
    )
    assert report["resuid"] == [65534, 65534, 65534]
    assert report["resgid"] == [65534, 65534, 65534]
    assert report["groups"] == [65534]
    assert report["no_new_privs"] == 1
    assert report["dumpable"] is False


@needs_root
@pytest.mark.root
def test_drop_can_keep_the_process_dumpable() -> None:
    report, _ = run_child(
        """
        from gximap.net.privileges import drop_privileges
        drop_privileges("nobody", dumpable=True)
        """
    )
    assert report["dumpable"] is True and report["no_new_privs"] == 1


def test_unknown_user_or_group_is_a_clear_error() -> None:
    # The lookups fail before anything is changed, so this is safe in the test process.
    with pytest.raises(PrivilegeError, match=r"^running_identity: no such user 'no-such-user-gx'$"):
        drop_privileges("no-such-user-gx")
    with pytest.raises(PrivilegeError, match=r"^running_identity: no such group 'no-such-group-gx'$"):
        drop_privileges("nobody:no-such-group-gx")
    with pytest.raises(PrivilegeError, match="names no user"):
        drop_privileges(":nogroup")
    uid = os.getuid()
    drop_privileges("")
    drop_privileges("   ")
    assert os.getuid() == uid


@needs_root
def test_not_root_keeps_identity_and_warns() -> None:
    report, stderr = run_child(
        """
        import logging, os
        logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(message)s")
        from gximap.net.privileges import drop_privileges
        os.setgroups([])
        os.setresgid(65534, 65534, 65534)
        os.setresuid(65534, 65534, 65534)
        drop_privileges("nobody")       # already that user: nothing to do, nothing to say
        drop_privileges("root:root")    # cannot switch: warn and carry on
        """
    )
    assert report["resuid"] == [65534, 65534, 65534]
    assert stderr.count("WARNING") == 1
    assert "running_identity root:root ignored: not running as root" in stderr


def test_raise_fd_limit_rejects_negative() -> None:
    with pytest.raises(ValueError):
        raise_fd_limit(-1)
    soft = resource.getrlimit(resource.RLIMIT_NOFILE)[0]
    assert raise_fd_limit(16) == soft  # never lowers


@needs_root
@pytest.mark.root
def test_raise_fd_limit() -> None:
    report, stderr = run_child(
        """
        import json, logging, os, resource
        logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(message)s")
        from gximap.net.privileges import raise_fd_limit
        soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
        resource.setrlimit(resource.RLIMIT_NOFILE, (256, hard))
        results = {"hard": hard, "raised": raise_fd_limit(512), "kept": raise_fd_limit(100)}
        results["to_hard"] = raise_fd_limit(0)
        # Root lifts the hard limit too, given CAP_SYS_RESOURCE (containers often drop it).
        with open("/proc/self/status") as status:
            capabilities = next(line for line in status if line.startswith("CapEff:")).split()[1]
        results["cap_sys_resource"] = bool(int(capabilities, 16) >> 24 & 1)
        results["root_beyond_hard"] = raise_fd_limit(hard + 1000)
        results["new_hard"] = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
        # Without root the hard limit is the ceiling: the call says so and returns what it got.
        os.setresuid(65534, 65534, 65534)
        results["unprivileged"] = raise_fd_limit(hard + 5000)
        print(json.dumps(results))
        """,
        report=False,
    )
    hard = report["hard"]
    assert isinstance(hard, int)
    assert report["raised"] == 512
    assert report["kept"] == 512
    assert report["to_hard"] == hard
    ceiling = hard + 1000 if report["cap_sys_resource"] else hard
    assert report["root_beyond_hard"] == ceiling
    assert report["new_hard"] == ceiling
    assert report["unprivileged"] == ceiling
    assert f"less than the {hard + 5000} wanted" in stderr
    if not report["cap_sys_resource"]:
        assert f"less than the {hard + 1000} wanted" in stderr
