"""Normalization of login names and addresses before they are mapped (maddy's ``*_normalize``).

Two spellings of one name must reach the same account: ``Alice@Example.ORG``, ``alice@example.org``
and a full-width ``ａｌｉｃｅ`` typed on a phone keyboard. The PRECIS framework (RFC 8264) with the
username profiles of RFC 8265 defines exactly that comparison for user names; maddy applies it to
the local part of an e-mail address and brings the domain to its lower-cased U-label form.

Functions (the names are the values of the ``*_map_normalize`` directives):

``precis_casefold_email``  PRECIS UsernameCaseMapped on the local part, domain in lower-case U-labels
``precis_casefold``        PRECIS UsernameCaseMapped on the whole string
``precis_email``           PRECIS UsernameCasePreserved on the local part, domain as above
``precis``                 PRECIS UsernameCasePreserved on the whole string
``casefold``               lower case only (``str.lower``, as midb compares account names)
``noop``                   unchanged
``auto``                   ``precis_casefold_email`` for an e-mail address, else ``precis_casefold``

A name a function cannot accept (spaces, control characters, an empty local part, a malformed
A-label, ...) raises :class:`NormalizeError`; the login then fails like a wrong password.
"""

from __future__ import annotations

import unicodedata
from collections.abc import Callable
from typing import TYPE_CHECKING

from precis_i18n import get_profile

if TYPE_CHECKING:
    from precis_i18n.profile import Profile

__all__ = [
    "MAX_NAME_LENGTH",
    "NORMALIZERS",
    "NormalizeError",
    "Normalizer",
    "domain_for_lookup",
    "get_normalizer",
    "split_address",
]

Normalizer = Callable[[str], str]

# Far above any real account name (midb allows 255 bytes), low enough that a hostile client cannot
# make a map's regular expression or the PRECIS tables chew on a 64 KiB "user name".
MAX_NAME_LENGTH = 1024

_CASE_MAPPED = get_profile("UsernameCaseMapped")
_CASE_PRESERVED = get_profile("UsernameCasePreserved")


class NormalizeError(ValueError):
    """The name cannot be normalized (and so names no account)."""


def split_address(address: str) -> tuple[str, str]:
    """(local part, domain) of ``address``, split at the last ``@`` (maddy's address.Split).

    ``postmaster`` alone is an address without a domain (RFC 5321). Raises NormalizeError when
    there is no ``@`` or a side is empty.
    """
    if address.lower() == "postmaster":
        return address, ""
    local, at, domain = address.rpartition("@")
    if not at:
        raise NormalizeError("not an e-mail address: no @")
    if not local:
        raise NormalizeError("empty local part")
    if not domain:
        raise NormalizeError("empty domain")
    return local, domain


def domain_for_lookup(domain: str) -> str:
    """The domain as compared: A-labels decoded to U-labels, NFC, lower case, no trailing dot."""
    labels: list[str] = []
    for label in domain.split("."):
        if label[:4].lower() == "xn--":
            encoded = label[4:].lower()
            try:
                decoded = encoded.encode("ascii").decode("punycode")
                # A real A-label stands for non-ASCII text and is the one encoding of it.
                valid = not decoded.isascii() and decoded.encode("punycode").decode("ascii") == encoded
            except (UnicodeError, ValueError):
                valid = False
            if not valid:
                raise NormalizeError(f"malformed A-label in domain {domain!r}")
            label = decoded
        labels.append(label)
    result = unicodedata.normalize("NFC", ".".join(labels)).lower()
    if result.endswith("."):
        result = result[:-1]
    if not result or any(not label for label in result.split(".")):
        raise NormalizeError(f"malformed domain {domain!r}")
    if any(char.isspace() or not char.isprintable() for char in result):
        raise NormalizeError(f"invalid character in domain {domain!r}")
    return result


def _check_length(name: str) -> None:
    if len(name) > MAX_NAME_LENGTH:
        raise NormalizeError(f"name longer than {MAX_NAME_LENGTH} characters")


def _enforce(profile: Profile, text: str) -> str:
    try:
        return profile.enforce(text)
    except UnicodeError as exc:  # precis_i18n refuses a str with UnicodeEncodeError (it has .reason)
        reason = exc.reason if isinstance(exc, UnicodeEncodeError) else str(exc)
        raise NormalizeError(f"{text!r} is not a valid user name ({reason})") from None


def _precis_email(address: str, profile: Profile) -> str:
    _check_length(address)
    local, domain = split_address(address)
    local = _enforce(profile, local)
    if not domain:
        return local
    return f"{local}@{domain_for_lookup(domain)}"


def precis_casefold_email(address: str) -> str:
    """``ÅLICE@Example.ORG`` → ``ålice@example.org``; not an address → NormalizeError."""
    return _precis_email(address, _CASE_MAPPED)


def precis_email(address: str) -> str:
    """``Alice@Example.ORG`` → ``Alice@example.org`` (the local part keeps its case)."""
    return _precis_email(address, _CASE_PRESERVED)


def precis_casefold(name: str) -> str:
    """The whole string through PRECIS UsernameCaseMapped: width-mapped, NFC, lower case."""
    _check_length(name)
    return _enforce(_CASE_MAPPED, name)


def precis(name: str) -> str:
    """The whole string through PRECIS UsernameCasePreserved."""
    _check_length(name)
    return _enforce(_CASE_PRESERVED, name)


def casefold(name: str) -> str:
    """Lower case only; an empty name is refused."""
    _check_length(name)
    if not name:
        raise NormalizeError("empty name")
    return name.lower()


def noop(name: str) -> str:
    """The name as given; an empty name is refused."""
    _check_length(name)
    if not name:
        raise NormalizeError("empty name")
    return name


def auto(name: str) -> str:
    """E-mail addresses as ``precis_casefold_email``, anything else as ``precis_casefold``."""
    _check_length(name)
    try:
        split_address(name)
    except NormalizeError:
        return precis_casefold(name)
    return precis_casefold_email(name)


NORMALIZERS: dict[str, Normalizer] = {
    "auto": auto,
    "precis_casefold_email": precis_casefold_email,
    "precis_casefold": precis_casefold,
    "precis_email": precis_email,
    "precis": precis,
    "casefold": casefold,
    "noop": noop,
}


def get_normalizer(name: str) -> Normalizer:
    """The normalizer called ``name`` (case-insensitive); ValueError names the choices."""
    try:
        return NORMALIZERS[name.strip().lower()]
    except KeyError:
        raise ValueError(f"unknown normalization {name!r} (expected one of {', '.join(NORMALIZERS)})") from None
