"""Log text quoted in error messages: escape sequences removed, secret values redacted."""

from __future__ import annotations

import pytest

from components import text
from components.text import redact, strip_ansi


@pytest.mark.parametrize("raw,clean", [
    ("\x1b[31mERROR\x1b[0m: failed", "ERROR: failed"),                      # SGR colours
    ("\x1b[1;38;5;196mbold red\x1b[m", "bold red"),                           # 256 colours, bare reset
    ("\x1b[38;2;255;0;0mrgb\x1b[39m", "rgb"),                                 # truecolour
    ("step 1/3\x1b[2K\x1b[1A\x1b[1Gstep 2/3", "step 1/3step 2/3"),           # erase line, cursor moves
    ("\x1b[?25l\x1b[?1049hhidden\x1b[?25h", "hidden"),                       # private modes
    ("\x1b]0;window title\x07text", "text"),                                  # OSC ended by BEL
    ("\x1b]8;;https://example.invalid\x1b\\link\x1b]8;;\x1b\\", "link"),     # OSC 8 hyperlink, ended by ST
    ("a\x1bPq#0;2;0;0;0\x1b\\b", "ab"),                                        # DCS (sixel)
    ("a\x1b_apc\x1b\\b\x1b^pm\x1b\\c\x1bXsos\x1b\\d", "abcd"),               # APC, PM, SOS
    ("\x1b(B\x1b)0\x1b7\x1b8\x1bc\x1bM\x1b=\x1b>x", "x"),                    # charsets, save/restore, reset...
    ("\x9b31mC1 CSI\x9b0m \x9d2;t\x9cok", "C1 CSI ok"),                      # 8-bit C1 forms
    ("unterminated \x1b]0;title", "unterminated "),                          # an OSC to the end, as a terminal
    ("lone escape at the end\x1b", "lone escape at the end"),
    ("plain\ttext\nwith lines [not an escape] 100%", "plain\ttext\nwith lines [not an escape] 100%"),
    ("ünïcode ✓ \x1b[32m✓\x1b[0m", "ünïcode ✓ ✓"),
])
def test_strip_ansi(raw, clean):
    assert strip_ansi(raw) == clean


@pytest.mark.parametrize("text,secrets,expected", [
    ("password=hunter22 at boot", ["hunter22"], "password=[secret] at boot"),
    ("hunter22 hunter2 hunter22", ["hunter2", "hunter22"], "[secret] [secret] [secret]"),   # longest first
    ("key abc and a", ["abc", "a", ""], "key abc and a"),                                   # too short: left
    ("abcd", ["abcd"], "[secret]"),                                                         # 4 characters: redacted
    ("dsn: postgres://u:p4ss.w*rd@db/x", ["p4ss.w*rd"], "dsn: postgres://u:[secret]@db/x"),  # no regex meaning
    ("line1\n-----BEGIN KEY-----\nMIIEsecretline\n", ["-----BEGIN KEY-----\nMIIEsecretline\n-----END KEY-----"],
     "line1\n[secret]\n[secret]\n"),                                                         # line by line
    ("DB_PASSWORD=s3cret!", {"DB_PASSWORD": "s3cret!"}, "DB_PASSWORD=[secret]"),           # a mapping's values
    ("nothing to hide", [], "nothing to hide"),
])
def test_redact(text, secrets, expected):
    assert redact(text, secrets) == expected


def test_strip_then_redact_catches_a_secret_split_by_colours():
    log = "token=\x1b[1mhun\x1b[0mter22"
    assert redact(log, ["hunter22"]) == log  # split by escapes: redact alone cannot see it
    assert redact(strip_ansi(log), ["hunter22"]) == "token=[secret]"


def test_tail_keeps_the_last_lines_cleaned():
    log = "one\n\x1b[31mtwo s3cret\x1b[0m\n\nthree\n"
    assert text.tail(log, 2, ["s3cret"]) == "two [secret]\nthree"
