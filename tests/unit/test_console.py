"""harness/console.py parse_frame: the framed answers of guest_tests/init, as the console shows them."""

from __future__ import annotations

import pytest

from harness.console import FrameError, parse_frame
from harness.errors import InfraError


def frame(fid: str, output: str, status: int = 0, nl: str = "\n") -> str:
    """What guest_tests/init prints: begin marker, output, a newline of its own (so output without
    a final newline cannot hide the marker), end marker with the exit status."""
    return f"@@CK-BEGIN {fid}{nl}{output.replace(chr(10), nl)}{nl}@@CK-END {fid} {status}{nl}"


def test_normal_frame():
    assert parse_frame(frame("a1b2c3.1", "hello\nworld\n"), "a1b2c3.1") == (0, "hello\nworld\n")


def test_crlf_from_the_tty_is_normalised():
    text = frame("a1b2c3.1", "hello\nworld\n", nl="\r\n")
    assert "\r\n" in text
    assert parse_frame(text, "a1b2c3.1") == (0, "hello\nworld\n")


def test_stray_carriage_returns_are_dropped():
    assert parse_frame("@@CK-BEGIN x.1\r\r\nabc\r\r\n\r\n@@CK-END x.1 0\r\n", "x.1") == (0, "abc\n")


@pytest.mark.parametrize("status", [1, 2, 127, 255])
def test_nonzero_status(status):
    assert parse_frame(frame("x.4", "sh: nope: not found\n", status), "x.4") == (status, "sh: nope: not found\n")


def test_empty_output():
    assert parse_frame(frame("x.2", ""), "x.2") == (0, "")


def test_blank_line_output_is_kept():
    assert parse_frame(frame("x.2", "\n\n"), "x.2") == (0, "\n\n")


def test_text_around_the_frame_is_ignored():
    text = "x.3 cat /proc/version\n" + frame("x.3", "Linux version 6.1.0\n") + "[  12.3] random: crng init\n"
    assert parse_frame(text, "x.3") == (0, "Linux version 6.1.0\n")


def test_an_earlier_frame_of_another_id_is_skipped():
    text = frame("x.1", "old\n", 5) + frame("x.2", "new\n", 0)
    assert parse_frame(text, "x.2") == (0, "new\n")
    assert parse_frame(text, "x.1") == (5, "old\n")


def test_output_containing_markers_of_other_ids_is_output():
    inner = "@@CK-BEGIN x.2\n@@CK-END x.2 0\n@@CK-END x.10 7\n@@CK-END x.1x 3\nlast\n"
    assert parse_frame(frame("x.1", inner, 4), "x.1") == (4, inner)


def test_the_id_is_matched_literally_not_as_a_regex():
    text = frame("x21", "wrong\n", 9) + frame("x.1", "right\n", 0)
    assert parse_frame(text, "x.1") == (0, "right\n")
    with pytest.raises(FrameError):
        parse_frame(frame("x21", "wrong\n", 9), "x.1")


def test_an_end_marker_before_the_begin_marker_is_ignored():
    text = "@@CK-END x.1 9\n" + frame("x.1", "ok\n", 0)
    assert parse_frame(text, "x.1") == (0, "ok\n")


def test_missing_end_marker():
    with pytest.raises(FrameError, match="no end marker for frame x.1"):
        parse_frame("@@CK-BEGIN x.1\npartial output\n", "x.1")


def test_missing_begin_marker():
    with pytest.raises(FrameError, match="no begin marker for frame x.1"):
        parse_frame("partial output\n@@CK-END x.1 0\n", "x.1")


def test_an_end_marker_without_a_status_is_no_end_marker():
    with pytest.raises(FrameError, match="no end marker"):
        parse_frame("@@CK-BEGIN x.1\nout\n@@CK-END x.1 \n", "x.1")


def test_frame_errors_are_infrastructure_errors():
    # A garbled answer means the harness could not judge the cell: ERROR, never FAIL.
    assert issubclass(FrameError, InfraError)


def test_output_without_a_final_newline():
    # `printf hi` in the guest: init prints its own newline before the end marker.
    assert parse_frame("@@CK-BEGIN x.1\r\nhi\r\n@@CK-END x.1 0\r\n", "x.1") == (0, "hi")
