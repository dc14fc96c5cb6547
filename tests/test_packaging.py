"""Packaging: the wheel, ``pip install``, ``make install`` (Debian-like layout) and logrotate.

Builds run on a copy of the source tree in tmp_path, so that they neither race other tests nor
leave build/ directories in the checkout. No network: ``--no-deps --no-build-isolation``.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tomllib
import zipfile
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
# What a build or `make install` reads from the tree.
SOURCE_ITEMS = ("Makefile", "pyproject.toml", "README.md", "CHANGELOG.md",
                "gximap", "midb", "data", "man", "etc", "systemd")
BUILD_TIMEOUT = 180
DATA_FILES = ("imap_code.txt", "folder_lang.txt")


def project_version() -> str:
    with open(REPO / "pyproject.toml", "rb") as handle:
        return tomllib.load(handle)["project"]["version"]


def copy_source(destination: Path) -> Path:
    destination.mkdir(parents=True)
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc", "*.egg-info", "build")
    for name in SOURCE_ITEMS:
        source = REPO / name
        if source.is_dir():
            shutil.copytree(source, destination / name, symlinks=True, ignore=ignore)
        else:
            shutil.copy2(source, destination / name)
    return destination


def quiet_pip_env() -> dict[str, str]:
    return dict(os.environ, PIP_DISABLE_PIP_VERSION_CHECK="1", PIP_NO_INDEX="1", PIP_NO_INPUT="1")


def run(args: list[str], *, cwd: Path | None = None, env: dict[str, str] | None = None,
        timeout: float = BUILD_TIMEOUT) -> subprocess.CompletedProcess[str]:
    result = subprocess.run(args, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout,
                            stdin=subprocess.DEVNULL)
    assert result.returncode == 0, f"{' '.join(args)} failed:\n{result.stdout}\n{result.stderr}"
    return result


def make_install(source: Path, destdir: Path | None, prefix: str, sysconfdir: str = "/etc") -> str:
    args = ["make", "-s", "-C", str(source), "install", f"PREFIX={prefix}", f"SYSCONFDIR={sysconfdir}",
            f"DESTDIR={destdir or ''}", f"BUILD_PYTHON={sys.executable}", f"INSTALL_PYTHON={sys.executable}"]
    return run(args, env=quiet_pip_env()).stdout


# ----------------------------------------------------------------------------------------------------
# wheel and pip install
# ----------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    work = tmp_path_factory.mktemp("wheel")
    source = copy_source(work / "src")
    run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q",
         "-w", str(work / "dist"), str(source)], env=quiet_pip_env())
    wheels = list((work / "dist").glob("gximap-*.whl"))
    assert len(wheels) == 1, wheels
    return wheels[0]


def test_wheel_contents(wheel: Path) -> None:
    assert wheel.name.startswith(f"gximap-{project_version()}-")
    with zipfile.ZipFile(wheel) as archive:
        names = set(archive.namelist())
        dist_info = f"gximap-{project_version()}.dist-info"
        entry_points = archive.read(f"{dist_info}/entry_points.txt").decode()
    for module in ("gximap/__init__.py", "gximap/cli.py", "gximap/config.py", "gximap/imap/codes.py",
                   "midb/__init__.py", "midb/cli.py", "midb/folderlang.py"):
        assert module in names, module
    for data in DATA_FILES:
        assert f"gximap/_data/{data}" in names, data
    # Only package code and data: no tests, no build helpers, no stray top-level directories.
    assert {name.split("/", 1)[0] for name in names} == {"gximap", "midb", dist_info}
    scripts = entry_points.split("[console_scripts]", 1)[1].split("[", 1)[0]
    entries = {line.split("=", 1)[0].strip(): line.split("=", 1)[1].strip()
               for line in scripts.splitlines() if "=" in line}
    assert entries == {"gximap": "gximap.cli:main", "midb": "midb.cli:main"}


def test_wheel_data_identical_to_source(wheel: Path) -> None:
    with zipfile.ZipFile(wheel) as archive:
        for data in DATA_FILES:
            assert archive.read(f"gximap/_data/{data}") == (REPO / "data" / data).read_bytes()


def test_pip_installed_package_reports_version_and_finds_data(wheel: Path, tmp_path: Path) -> None:
    target = tmp_path / "site"
    run([sys.executable, "-m", "pip", "install", "--no-deps", "-q", "--target", str(target), str(wheel)],
        env=quiet_pip_env())
    env = dict(quiet_pip_env(), PYTHONPATH=str(target))
    version = project_version()
    assert run([str(target / "bin" / "gximap"), "--version"], env=env).stdout == f"gximap {version}\n"
    assert version in run([str(target / "bin" / "midb"), "--version"], env=env).stdout
    # Without any data_file_path directory holding them, the data files come from the package.
    probe = (
        "import gximap, gximap.imap.codes as codes, midb.folderlang as folderlang\n"
        "print(gximap.__file__)\n"
        "print(codes.ResponseCodes.load('/nonexistent').source)\n"
        "print(folderlang.FolderLanguages.load(['/nonexistent']).source)\n"
    )
    lines = run([sys.executable, "-c", probe], env=env, cwd=tmp_path).stdout.splitlines()
    assert lines == [str(target / "gximap" / "__init__.py"),
                     str(target / "gximap" / "_data" / "imap_code.txt"),
                     str(target / "gximap" / "_data" / "folder_lang.txt")]


# ----------------------------------------------------------------------------------------------------
# make install
# ----------------------------------------------------------------------------------------------------


def test_make_install_layout(tmp_path: Path) -> None:
    source = copy_source(tmp_path / "src")
    dest = tmp_path / "dest"
    make_install(source, dest, "/usr")
    usr = dest / "usr"
    lib = usr / "lib" / "gximap"

    # Python packages in the private site directory; pip's own script wrappers are removed.
    assert (lib / "gximap" / "__init__.py").is_file() and (lib / "midb" / "cli.py").is_file()
    assert (lib / f"gximap-{project_version()}.dist-info").is_dir()
    assert not (lib / "bin").exists()

    for tool in ("gximap", "midb"):
        wrapper = usr / "sbin" / tool
        assert os.access(wrapper, os.X_OK), tool
        assert wrapper.read_text().splitlines()[0] == f"#!{sys.executable} -I"
    version = run([str(usr / "sbin" / "gximap"), "--version"]).stdout
    assert version == f"gximap {project_version()}\n"
    assert project_version() in run([str(usr / "sbin" / "midb"), "--version"]).stdout

    man = usr / "share" / "man"
    for page, section in (("gximap.8gx", "man8"), ("midb.8gx", "man8"), ("gximap.cfg.5", "man5"),
                          ("gximap.7", "man7")):
        assert (man / section / page).read_bytes() == (REPO / "man" / page).read_bytes(), page

    data_dir = usr / "share" / "gromox" / "imap"
    for data in DATA_FILES:
        assert (data_dir / data).read_bytes() == (REPO / "data" / data).read_bytes()

    units = usr / "lib" / "systemd" / "system"
    shipped = sorted(path.name for path in (REPO / "systemd").iterdir())
    assert sorted(path.name for path in units.iterdir()) == shipped  # GX_UNITS lists them all
    for unit in shipped:
        assert (units / unit).read_text() == (REPO / "systemd" / unit).read_text(), unit  # PREFIX=/usr
    for name in ("imap.cfg", "gromox.cfg"):
        assert (dest / "etc" / "gromox" / name).read_bytes() == (REPO / "etc" / "gromox" / name).read_bytes()
        assert (usr / "share" / "doc" / "gximap" / "examples" / name).is_file()
    assert (dest / "etc" / "logrotate.d" / "gximap").read_bytes() == \
        (REPO / "etc" / "logrotate.d" / "gximap").read_bytes()
    if (REPO / "etc" / "fail2ban" / "filter.d" / "gromox-imap.conf").is_file():
        assert (dest / "etc" / "fail2ban" / "filter.d" / "gromox-imap.conf").is_file()
    assert not (dest / "etc" / "fail2ban" / "jail.d").exists()  # a jail is the admin's decision
    assert (usr / "share" / "doc" / "gximap" / "CHANGELOG.md").is_file()

    # The installed package finds the installed data files through data_file_path.
    probe = (
        "import sys\n"
        f"sys.path.insert(0, {str(lib)!r})\n"
        "import gximap, gximap.imap.codes as codes, midb.folderlang as folderlang\n"
        "from gximap.config import config_from_text\n"
        f"cfg = config_from_text('data_file_path = /nonexistent:{data_dir}\\n')\n"
        "print(gximap.__file__)\n"
        "print(codes.ResponseCodes.load(str(cfg.data_file_path)).source)\n"
        "print(folderlang.FolderLanguages.load(str(cfg.data_file_path).split(':')).source)\n"
    )
    lines = run([sys.executable, "-I", "-c", probe], cwd=tmp_path).stdout.splitlines()
    assert lines == [str(lib / "gximap" / "__init__.py"), str(data_dir / "imap_code.txt"),
                     str(data_dir / "folder_lang.txt")]


def test_make_install_keeps_existing_configuration(tmp_path: Path) -> None:
    source = copy_source(tmp_path / "src")
    dest = tmp_path / "dest"
    local_files = {
        dest / "etc" / "gromox" / "imap.cfg": "context_num = 7\n",
        dest / "etc" / "gromox" / "gromox.cfg": "imap_listen = 127.0.0.1:143\n",
        dest / "etc" / "logrotate.d" / "gximap": "# local rotation policy\n",
    }
    for path, text in local_files.items():
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    output = make_install(source, dest, "/usr/local")
    for path, text in local_files.items():
        assert path.read_text() == text, path
        assert f"keeping existing {path}" in output
    # Everything under PREFIX is replaced; the unit follows PREFIX.
    service = (dest / "usr" / "local" / "lib" / "systemd" / "system" / "gximap.service").read_text()
    assert "\nExecStart=/usr/local/sbin/gximap\n" in service
    assert (dest / "usr" / "local" / "sbin" / "gximap").is_file()


# ----------------------------------------------------------------------------------------------------
# logrotate
# ----------------------------------------------------------------------------------------------------


def test_logrotate_snippet_rotates_and_signals(tmp_path: Path) -> None:
    logrotate = shutil.which("logrotate") or ("/usr/sbin/logrotate" if os.path.exists("/usr/sbin/logrotate")
                                              else None)
    if logrotate is None:
        pytest.skip("logrotate is not installed (make sysdeps installs it)")
    snippet = (REPO / "etc" / "logrotate.d" / "gximap").read_text()
    assert "\t\tsystemctl kill --signal=HUP gximap.service" in snippet
    assert "create 0640 gromox gromox" in snippet and "su gromox gromox" in snippet
    log_dir = tmp_path / "log"
    log_dir.mkdir(mode=0o750)
    log_file = log_dir / "imap.log"
    log_file.write_text("gximap[1]: <4> a line\n")
    marker = tmp_path / "hup-sent"
    import grp
    import pwd

    user, group = pwd.getpwuid(os.getuid()).pw_name, grp.getgrgid(os.getgid()).gr_name
    # The same snippet with this test's file, user and a marker instead of signalling a service.
    local = (snippet.replace("/var/log/gromox/imap.log", str(log_file))
             .replace("gromox gromox", f"{user} {group}")
             .replace("systemctl kill --signal=HUP gximap.service", f"touch {marker}"))
    config = tmp_path / "logrotate.conf"
    config.write_text(local)
    result = subprocess.run([logrotate, "-f", "-s", str(tmp_path / "state"), str(config)],
                            capture_output=True, text=True, timeout=30)
    assert result.returncode == 0, result.stderr
    assert marker.exists()
    assert (log_dir / "imap.log.1").read_text() == "gximap[1]: <4> a line\n"  # delaycompress
    assert log_file.exists() and log_file.stat().st_size == 0
    assert log_file.stat().st_mode & 0o777 == 0o640
