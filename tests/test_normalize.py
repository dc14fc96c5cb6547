"""gximap.auth.normalize: maddy's normalization functions on top of PRECIS (RFC 8264/8265)."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gximap.auth import normalize
from gximap.auth.normalize import (
    MAX_NAME_LENGTH,
    NORMALIZERS,
    NormalizeError,
    domain_for_lookup,
    get_normalizer,
    split_address,
)


def test_the_documented_set_of_functions() -> None:
    assert set(NORMALIZERS) == {"auto", "precis_casefold_email", "precis_casefold", "precis_email", "precis",
                                "casefold", "noop"}
    assert get_normalizer(" PRECIS ") is normalize.precis
    with pytest.raises(ValueError, match="expected one of auto"):
        get_normalizer("nfkc")


@pytest.mark.parametrize(("address", "expected"), [
    ("alice@example.org", ("alice", "example.org")),
    ('"a@b"@example.org', ('"a@b"', "example.org")),  # the last @ separates the domain
    ("postmaster", ("postmaster", "")),
    ("PostMaster", ("PostMaster", "")),
])
def test_split_address(address: str, expected: tuple[str, str]) -> None:
    assert split_address(address) == expected


@pytest.mark.parametrize("address", ["alice", "@example.org", "alice@", ""])
def test_split_address_refuses(address: str) -> None:
    with pytest.raises(NormalizeError):
        split_address(address)


@pytest.mark.parametrize(("domain", "expected"), [
    ("Example.ORG", "example.org"),
    ("example.org.", "example.org"),
    ("xn--bcher-kva.example", "bücher.example"),
    ("XN--BCHER-KVA.Example", "bücher.example"),
    ("Bu\u0308cher.example", "bücher.example"),  # NFC: combining diaeresis composed
])
def test_domain_for_lookup(domain: str, expected: str) -> None:
    assert domain_for_lookup(domain) == expected


@pytest.mark.parametrize("domain", ["xn--zz--", "xn--", "a..b", ".", "exa mple.org", "a\x00b"])
def test_domain_for_lookup_refuses(domain: str) -> None:
    with pytest.raises(NormalizeError):
        domain_for_lookup(domain)


@pytest.mark.parametrize(("function", "name", "expected"), [
    ("precis_casefold_email", "ÅLICE@Example.ORG", "ålice@example.org"),
    ("precis_casefold_email", "Alice@xn--bcher-kva.example", "alice@bücher.example"),
    ("precis_casefold_email", "ａｌｉｃｅ@example.org", "alice@example.org"),  # width mapping
    ("precis_casefold_email", "Postmaster", "postmaster"),
    ("precis_email", "Alice@Example.ORG", "Alice@example.org"),
    ("precis_casefold", "ＡＬＩＣＥ", "alice"),
    ("precis_casefold", "Alice@Example.ORG", "alice@example.org"),  # the whole string, domain too
    ("precis", "Alice", "Alice"),
    ("precis", "ａｌｉｃｅ", "alice"),
    ("casefold", "Alice@Example.ORG", "alice@example.org"),
    ("casefold", "ａｌｉｃｅ", "ａｌｉｃｅ"),  # no width mapping
    ("noop", "Alice", "Alice"),
    ("auto", "Alice@xn--bcher-kva.example", "alice@bücher.example"),
    ("auto", "ＡＬＩＣＥ", "alice"),
    ("auto", "alice@", "alice@"),  # not an address: the whole-string profile
])
def test_functions(function: str, name: str, expected: str) -> None:
    assert NORMALIZERS[function](name) == expected


@pytest.mark.parametrize(("function", "name"), [
    ("precis_casefold_email", "alice"),  # not an address
    ("precis_casefold_email", "a b@example.org"),  # space in the local part
    ("precis_email", "alice@xn--zz--"),
    ("precis_casefold", "a b"),
    ("precis_casefold", "tab\there"),
    ("precis_casefold", ""),
    ("precis", "\u0007bell"),
    ("auto", "a b"),
    ("auto", "alice@exa mple.org"),
    ("casefold", ""),
    ("noop", ""),
])
def test_functions_refuse(function: str, name: str) -> None:
    with pytest.raises(NormalizeError):
        NORMALIZERS[function](name)


@pytest.mark.parametrize("function", sorted(NORMALIZERS))
def test_overlong_names_are_refused_cheaply(function: str) -> None:
    with pytest.raises(NormalizeError, match="longer than"):
        NORMALIZERS[function]("a" * (MAX_NAME_LENGTH + 1))
    # the bound itself is fine where the profile accepts the characters
    if function not in ("precis_casefold_email", "precis_email"):
        assert NORMALIZERS[function]("a" * MAX_NAME_LENGTH) == "a" * MAX_NAME_LENGTH


@settings(max_examples=300, deadline=None)
@given(st.text(max_size=80))
def test_any_text_normalizes_or_raises_normalize_error_and_is_idempotent(text: str) -> None:
    for function in NORMALIZERS.values():
        try:
            once = function(text)
        except NormalizeError:
            continue
        assert isinstance(once, str) and once
        assert function(once) == once
