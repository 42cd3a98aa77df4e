"""Parsing and formatting the deadline headers, and timeout_header() outside requests."""

from __future__ import annotations

import re

import pytest
from hypothesis import given
from hypothesis import strategies as st

from resilient import Timeout
from resilient.asgi import timeout_header
from resilient.asgi._deadline import (
    format_grpc_timeout,
    format_seconds,
    parse_grpc_timeout,
    parse_seconds,
    read_deadline,
)

pytestmark = pytest.mark.anyio


@pytest.mark.parametrize(
    ("value", "seconds"),
    [
        (b"1H", 3600.0),
        (b"2M", 120.0),
        (b"5S", 5.0),
        (b"100m", 0.1),
        (b"250u", 250e-6),
        (b"99999999n", 0.099999999),
        (b"0S", 0.0),
    ],
)
def test_parse_grpc_timeout(value: bytes, seconds: float) -> None:
    assert parse_grpc_timeout(value) == pytest.approx(seconds)


@pytest.mark.parametrize("value", [b"", b"S", b"123456789S", b"1s", b"1.5S", b"-1S", b"1 S"])
def test_parse_grpc_timeout_rejects(value: bytes) -> None:
    assert parse_grpc_timeout(value) is None


def test_parse_seconds() -> None:
    assert parse_seconds(b"1.5") == 1.5
    assert parse_seconds(b"30") == 30.0
    for bad in (b"", b".5", b"1.", b"1e3", b"nan", b"inf", b"-1", b" 1", b"1_0", b"9" * 13):
        assert parse_seconds(bad) is None, bad


# The formats as regular expressions: the parsers skip the regex on their common paths,
# and must agree with it on every input.
_SECONDS_FORMAT = re.compile(rb"\d{1,12}(?:\.\d{1,9})?")
_GRPC_FORMAT = re.compile(rb"(\d{1,8})([HMSmun])")
_GRPC_UNIT = {b"H": 3600.0, b"M": 60.0, b"S": 1.0, b"m": 1e-3, b"u": 1e-6, b"n": 1e-9}
_HEADER_BYTES = st.one_of(
    st.binary(max_size=16),
    st.lists(st.sampled_from(list(b"0123456789.HMSmunse +-_")), max_size=16).map(bytes),
    st.text("0123456789\u0660\u00b2", max_size=14).map(lambda t: t.encode()),
)


@given(_HEADER_BYTES)
def test_parsers_agree_with_the_formats(value: bytes) -> None:
    seconds = float(value) if _SECONDS_FORMAT.fullmatch(value) else None
    assert parse_seconds(value) == seconds
    assert parse_seconds(bytearray(value)) == seconds
    match = _GRPC_FORMAT.fullmatch(value)
    grpc = None if match is None else int(match[1]) * _GRPC_UNIT[match[2]]
    assert parse_grpc_timeout(value) == grpc
    assert parse_grpc_timeout(bytearray(value)) == grpc


def test_read_deadline_takes_the_tightest_valid_header() -> None:
    names = {b"x-request-timeout": False, b"grpc-timeout": True}
    headers = [(b"grpc-timeout", b"3S"), (b"x-request-timeout", b"bad"), (b"other", b"1")]
    assert read_deadline(headers, names) == 3.0
    headers.append((b"x-request-timeout", b"2.5"))
    assert read_deadline(headers, names) == 2.5
    assert read_deadline([], names) is None


@pytest.mark.parametrize(
    ("seconds", "text"),
    [
        (0.0, "0n"),
        (-1.0, "0n"),
        (0.05, "50000000n"),
        (1.5, "1500000u"),
        (1e-10, "1n"),  # rounded up: never zero
        (200.0, "200000m"),
        (86_400.0 * 30, "2592000S"),
        (1e9, "16666667M"),
        (1e11, "27777778H"),
        (1e20, "99999999H"),
    ],
)
def test_format_grpc_timeout(seconds: float, text: str) -> None:
    assert format_grpc_timeout(seconds) == text
    parsed = parse_grpc_timeout(text.encode())
    assert parsed is not None
    assert parsed >= min(max(seconds, 0.0), 99_999_999 * 3600.0) * (1 - 1e-9)


def test_format_seconds_rounds_down() -> None:
    assert format_seconds(1.23456) == "1.234"
    assert format_seconds(0.0009) == "0.000"
    assert format_seconds(-3) == "0.000"


async def test_timeout_header_follows_remaining() -> None:
    assert timeout_header() == {}
    async with Timeout(5):
        header = timeout_header()
        assert list(header) == ["x-request-timeout"]
        assert 4.9 < float(header["x-request-timeout"]) <= 5.0
        grpc = timeout_header("grpc-timeout")["grpc-timeout"]
        assert grpc.endswith("u")
        assert list(timeout_header("X-Timeout")) == ["X-Timeout"]
