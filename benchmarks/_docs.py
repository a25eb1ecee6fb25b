"""Shared by the benchmarks: print a measured section and write it into a Markdown file between two markers."""

from __future__ import annotations

import re
from pathlib import Path

from symfw.core.io import atomic_write_text


def publish(section: str, doc: Path, start: str, end: str, header: str, write: bool = True) -> None:
    """Print the measured ``section`` and (unless ``write`` is false) put it into ``doc``."""
    print()
    print(section)
    if write:
        write_section(doc, start, end, section, header)
        print(f"\nwrote {doc}")


def write_section(doc: Path, start: str, end: str, section: str, header: str) -> None:
    """Replace the text between ``start`` and ``end`` in ``doc`` (appended, markers and all, if
    absent; a new file begins with ``header``)."""
    text = doc.read_text() if doc.is_file() else header
    block = f"{start}\n{section.rstrip()}\n{end}"
    if start in text and end in text:
        text = re.sub(re.escape(start) + r".*?" + re.escape(end), lambda _: block, text, flags=re.S)
    else:
        text = text.rstrip() + "\n\n" + block + "\n"
    atomic_write_text(doc, text)
