"""Encoding for `fly secrets import`: our model of flyctl's parser, and values it cannot carry.

The stand-in implements the parser independently (from the reference); tests/tasks prove
delivery through it byte for byte. Here: the parser model follows every example of
flyctl.md §4, and every encoded value parses back unchanged.
"""

import pytest

from flyops.errors import BadInput
from flyops.flyctl.importfmt import encode_entry, encode_for_import, parse_import
from flyops.secret import Secret

HOSTILE = {
    "PEM": "-----BEGIN PRIVATE KEY-----\nMIIEvQIBADANBg\nkqhkiG9w0BAQEF\n-----END PRIVATE KEY-----\n",
    "HASH": "pa#ss#word",
    "URL_FRAGMENT": "https://example.com/path#frag",
    "DOUBLE": '"quoted"',
    "SINGLE": "'quoted'",
    "MIXED": "it's a \"test\" # not a comment",
    "EQUALS": "a=b=c==",
    "LEADING": "   three spaces",
    "TRAILING": "trailing   ",
    "UNICODE": "pässwörd-✓-日本",
    "EMPTY": "",
    "TRIPLE_START": '"""starts with triple',
    "LEADING_NEWLINE": "\nfirst line empty",
    "HASH_FIRST": "#not a comment",
    "SINGLE_HASH": "'a#b'",
    "BACKSLASH": r"C:\path\n not a newline",
    "DOLLAR": "${HOME} $PATH",
    "TABS": "\tx\t",
}


@pytest.mark.parametrize(
    ("line", "expected"),
    [
        ("FOO = BAR", {"FOO": "BAR"}),
        ("A=x#y", {"A": "x"}),
        ('A="x#y"', {"A": "x#y"}),
        ('A="x" # note', {"A": "x"}),
        ("A='x#y'", {"A": "'x"}),
        ('A="x#y" # note', {"A": '"x#y" # note'}),
        ('K=""""""', {"K": ""}),
        ('K="""\na\nb\n"""', {"K": "\na\nb\n"}),
        ('K="""a\nb"""', {"K": "a\nb"}),
        ("A=1\nA=2", {"A": "2"}),
        ("# comment\n\nB=2", {"B": "2"}),
        ('K="""unterminated\nrest', {}),
        ("K=a\\nb", {"K": "a\\nb"}),
    ],
)
def test_parser_model_follows_the_reference(line, expected):
    assert parse_import(line + "\n") == expected


def test_line_without_equals_is_an_error():
    with pytest.raises(ValueError, match="NAME=VALUE"):
        parse_import("JUSTANAME\n")


@pytest.mark.parametrize("key", sorted(HOSTILE))
def test_every_hostile_value_round_trips(key):
    entry = encode_entry(key, HOSTILE[key])
    assert parse_import(entry + "\n") == {key: HOSTILE[key]}


def test_whole_payload_round_trips_and_is_a_secret():
    payload = encode_for_import({k: Secret(v) for k, v in HOSTILE.items()})
    assert isinstance(payload, Secret) and "BEGIN" not in repr(payload)
    assert parse_import(payload.reveal()) == HOSTILE


@pytest.mark.parametrize(
    ("value", "why"),
    [
        ("crlf\r\nvalue", "carriage return"),
        ("x" * 70000, "64 KiB"),
        ('"""a"""\n"""b', "no quoting"),
    ],
)
def test_values_the_parser_cannot_carry_are_refused_by_name(value, why):
    with pytest.raises(BadInput) as exc:
        encode_entry("THE_KEY", value)
    assert "THE_KEY" in str(exc.value) and why in str(exc.value)
    assert value[:20] not in str(exc.value)
