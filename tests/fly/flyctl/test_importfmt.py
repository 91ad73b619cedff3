"""Encoding for `fly secrets import`: our model of flyctl's parser, and values it cannot carry.

The stand-in implements the parser independently (from the reference); tests/tasks prove
delivery through it byte for byte. Here: the parser model follows every example of
flyctl.md §4, and every encoded value parses back unchanged.
"""

import pytest

from flyops.errors import BadInput
from flyops.fly.flyctl.importfmt import encode_entry, encode_for_import, parse_import
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
        ("x" * 70000, "65535 bytes"),
        ('"""a"""\n"""b', "no quoting"),
    ],
)
def test_values_the_parser_cannot_carry_are_refused_by_name(value, why):
    with pytest.raises(BadInput) as exc:
        encode_entry("THE_KEY", value)
    assert "THE_KEY" in str(exc.value) and why in str(exc.value)
    assert value[:20] not in str(exc.value)


# -- the two traps of flyctl's parser (internal/command/secrets/parser.go `parseSecrets`) ----------


@pytest.mark.parametrize("value", ['"', "'"])
def test_a_lone_quote_is_refused_by_name_before_anything_is_sent(value):
    """parseSecrets slices value[1:len-1] once HasPrefix and HasSuffix match the same single
    character: flyctl panics (exit 3, nothing set). The old encoder sent `KEY="` as is,
    because its parser model treated a one-character value as plain."""
    with pytest.raises(BadInput) as exc:
        encode_entry("LONE", value)
    assert "LONE" in str(exc.value) and "lone quote" in str(exc.value)
    with pytest.raises(BadInput):
        encode_for_import({"OK": Secret("fine"), "LONE": Secret(value)})


@pytest.mark.parametrize("line", ['K="', "K='", "K= '", "K='#comment"])
def test_parser_model_panics_where_flyctl_does(line):
    from flyops.fly.flyctl.importfmt import ParserPanic

    with pytest.raises(ParserPanic):
        parse_import(line + "\n")


def test_line_limit_is_in_bytes_not_characters():
    """bufio.Scanner's 64 KiB buffer must hold the line and its newline: 65535 bytes pass,
    65536 do not. 30,000 three-byte characters are 90,000 bytes: the old limit (61,440
    characters) let them through, and flyctl then dropped that entry and all later ones."""
    from flyops.fly.flyctl.importfmt import MAX_LINE_BYTES

    assert MAX_LINE_BYTES == 65535
    fits = "x" * (MAX_LINE_BYTES - len("BIG="))
    assert parse_import(encode_entry("BIG", fits) + "\n") == {"BIG": fits}
    with pytest.raises(BadInput, match="BIG: its entry has a line of 65536 bytes"):
        encode_entry("BIG", fits + "x")
    wide = "日" * 30000
    assert len(wide) < 61440 < len(wide.encode())
    with pytest.raises(BadInput, match="WIDE"):
        encode_entry("WIDE", wide)


def test_parser_model_stops_silently_at_the_first_line_too_long():
    text = "A=1\nB=" + "é" * 40000 + "\nC=3\n"
    assert parse_import(text) == {"A": "1"}


def test_a_long_value_split_over_lines_is_carried():
    pem = "\n".join(["x" * 64] * 2000)  # 130 KB in lines of 64 bytes
    assert parse_import(encode_entry("PEM", pem) + "\n") == {"PEM": pem}
