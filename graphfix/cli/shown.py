"""The one place where text that came from outside graphfix (a path, a file or tensor name, a config value, a
library's message) is made safe to print on a terminal: every character that is not printable (terminal control
sequences such as OSC 8 hyperlinks and colours, BEL, bidi overrides such as U+202E, newlines) is shown as its escape,
and a name's bytes that are not UTF-8 as `\\xNN`, as `ls -b` does. Every text line goes through `say` or `tell`
(app.py), which apply it; JSON is not text: json.dumps escapes what it must and keeps every name exact."""

from __future__ import annotations

_NAMED = {"\n": "\\n", "\r": "\\r", "\t": "\\t"}


def undecodable_escaped(text: str) -> str:
    """A name's bytes that are not UTF-8 (Python holds them as lone surrogates) shown as `\\xNN`: written raw they
    would make the whole line undecodable for a reader expecting UTF-8."""
    try:  # the bytes back as they were, then decoded with each invalid one as \\xNN (no regex: this runs on errors,
        # out of memory too, where compiling one can fail)
        return text.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")
    except UnicodeEncodeError:  # a surrogate that stands for no byte: nothing a file name holds (escaped below)
        return text


def _escape(ch: str) -> str:
    code = ord(ch)
    return _NAMED.get(ch) or (f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}" if code < 0x10000
                              else f"\\U{code:08x}")


def shown(text: str) -> str:
    """`text` as one line a terminal prints as it reads: non-printable characters (Unicode's control, format and
    separator classes but the space: ESC, BEL, U+202E, newlines) escaped, the rest kept."""
    text = undecodable_escaped(text)
    if text.isprintable():
        return text
    return "".join(ch if ch.isprintable() else _escape(ch) for ch in text)
