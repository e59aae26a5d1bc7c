"""Reading a CSV as a stream: one record at a time, each with its line number; a malformed line is
reported (fields None, a problem) and skipped, and reading goes on after it.

RFC 4180 quoting, UTF-8 (a byte-order mark is dropped); a physical line over MAX_LINE bytes is
skipped without being held in memory.
"""

import csv
from collections import deque
from collections.abc import Iterator
from dataclasses import dataclass
from typing import BinaryIO

MAX_LINE = 2**20  # bytes; a longer physical line is reported and skipped without being held


@dataclass
class Record:
    line: int  # the line the record starts on (the header is line 1)
    fields: list[str] | None  # None when the record is unusable
    problem: str = ""


class CsvRecords:
    """The records of a CSV file (RFC 4180, UTF-8), each with its line number. A record with invalid
    UTF-8, bad quoting or the wrong number of fields comes back with `fields=None` and a problem;
    reading goes on after it. When a bad record spans several lines (an unclosed quote swallows the
    lines after it), those lines are read again as records of their own."""

    def __init__(self, f: BinaryIO):
        self.f = f
        self.lineno = 0
        self.again: deque = deque()  # (line, text, problem) to be read again
        self.taken: list = []  # the lines of the record being read
        self.width: int | None = None  # expected number of fields, once the header is known

    def physical(self):
        if self.again:
            return self.again.popleft()
        raw = self.f.readline(MAX_LINE + 1)
        if not raw:
            return None
        self.lineno += 1
        if len(raw) > MAX_LINE and not raw.endswith(b"\n"):
            while (rest := self.f.readline(MAX_LINE)) and not rest.endswith(b"\n"):
                pass
            return self.lineno, "\n", f"line is longer than {MAX_LINE // 2**20} MiB"
        if self.lineno == 1 and raw.startswith(b"\xef\xbb\xbf"):
            raw = raw[3:]  # a byte-order mark, as spreadsheet programs write
        try:
            return self.lineno, raw.decode("utf-8"), ""
        except UnicodeDecodeError as e:
            return (
                self.lineno,
                raw.decode("utf-8", "replace"),
                f"not valid UTF-8 (byte {raw[e.start]:#04x} at column {e.start + 1})",
            )

    def lines(self) -> Iterator[str]:
        while (item := self.physical()) is not None:
            self.taken.append(item)
            yield item[1]

    def __iter__(self) -> Iterator[Record]:
        reader = csv.reader(self.lines(), strict=True)
        while True:
            self.taken = []
            structure = ""  # a quoting or field-count problem
            try:
                fields = next(reader)
                if fields and self.width is not None and len(fields) != self.width:
                    structure = f"expected {self.width} fields, found {len(fields)}"
            except StopIteration:
                return
            except csv.Error as e:
                fields, structure = None, f"bad CSV ({e})"
            if not self.taken:
                return
            first, last = self.taken[0][0], self.taken[-1][0]
            encoding = next((p for _, _, p in self.taken if p), "")
            if structure and len(self.taken) > 1:  # an unclosed quote took the lines after the first: read them again
                self.again.extendleft(reversed(self.taken[1:]))
                yield Record(first, None, f"{structure} (in the record from line {first} to {last})")
            elif structure or encoding:
                yield Record(first, None, structure or encoding)
            elif fields:  # blank lines are skipped, as pandas does
                yield Record(first, fields)
