"""gximap: a Gromox-style IMAP server backed by midb."""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("gximap")
except PackageNotFoundError:  # running from a source tree that was never installed
    __version__ = "0.1.0"
