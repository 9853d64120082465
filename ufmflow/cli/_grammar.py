"""The one command-line grammar of every `python -m ufmflow.<command>` (issue 13, point 4).

Words are `key=value`. A value is a number (`3`, `1e-2`), a comma list (`1,2,4`), an inclusive
integer range (`2..8`, mixable: `1..3,8`) or, for real-valued list keys, a geometric range
`a:b:n` (n log-spaced values from a to b). Keys are typed (`Key`): int, real, list of int,
list of real, choice, text, bool, each with its help, its default and its bounds.

Every error is a `UsageError(key, token, reason)`: one line naming the key and the offending
token (an unknown key gets the nearest valid one, by `difflib`). `run_command` turns the
grammar into a command's exit codes: `--help`/`-h` prints to stdout and returns 0; a
`UsageError` prints one line to stderr and returns 2. Commands validate every word before they
write anything.
"""

from __future__ import annotations

import dataclasses
import difflib
import math
import re
import sys
import textwrap
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np

HELP_WORDS = ("-h", "--help", "help")
KINDS = ("int", "real", "ints", "reals", "choice", "text", "bool")
_TRUE, _FALSE = ("1", "true", "yes", "on"), ("0", "false", "no", "off")
MAX_VALUES = 2**24  # a list longer than this is refused before it is materialized


class UsageError(ValueError):
    """Bad command-line input: the `key` (or `analysis`), the offending `token`, the `reason`
    with its fix. `line(prog)` is the one line a command prints before exiting with 2."""

    def __init__(self, key: str, token: str, reason: str):
        self.key, self.token, self.reason = str(key), str(token), str(reason)
        super().__init__(f"key '{self.key}', token '{self.token}': {self.reason}")

    def line(self, prog: str) -> str:
        return f"{prog}: error: key '{self.key}', token '{self.token}': {self.reason}"


def suggest(word: str, valid: Sequence[str], what: str = "key", plural: str = "") -> str:
    """`"unknown <what>; did you mean 'x'?"` with the nearest valid word (difflib), else
    `"unknown <what>; valid <plural>: a, b, ..."`."""
    near = difflib.get_close_matches(word, list(valid), n=1)
    if near:
        return f"unknown {what}; did you mean '{near[0]}'?"
    return f"unknown {what}; valid {plural or what + 's'}: {', '.join(valid)}"


def wants_help(argv: Sequence[str]) -> bool:
    return any(a in HELP_WORDS for a in argv)


# --------------------------------------------------------------------------------------------
# Values


def parse_number(key: str, token: str, text: str) -> float:
    """A finite float, or `UsageError` ("not a number", "not finite")."""
    try:
        value = float(text)
    except ValueError:
        raise UsageError(key, token, f"'{text}' is not a number") from None
    if not math.isfinite(value):
        raise UsageError(key, token, f"'{text}' is not finite")
    return value


def parse_integer(key: str, token: str, text: str, *, hint: str = "") -> int:
    """An integer (`8`, `8.0`, `1e3`), or `UsageError` ("not an integer" + `hint`)."""
    value = parse_number(key, token, text)
    if value != int(value):
        raise UsageError(key, token, f"'{text}' is not an integer{hint}")
    return int(value)


def parse_values(key: str, text: str, *, real: bool, geometric_hint: str = "",
                 int_hint: str = "") -> tuple:
    """A list value: items `x`, `a..b` (inclusive integers) or `a:b:n` (geometric, only when
    `real`), separated by commas; no empty range, no duplicates. `real=False` gives ints;
    `real=True` gives the numbers as written (ints from `a..b`). Raises `UsageError`."""
    if text.strip() == "":
        raise UsageError(key, text, "empty value")
    out: list = []
    for token in text.split(","):
        token = token.strip()
        if token == "":
            raise UsageError(key, text, "empty item in the list")
        if ".." in token:
            a, _, b = token.partition("..")
            lo = parse_integer(key, token, a, hint=int_hint)
            hi = parse_integer(key, token, b, hint=int_hint)
            if hi < lo:
                raise UsageError(key, token, "empty range (a..b needs a <= b)")
            if hi - lo + 1 > MAX_VALUES:
                raise UsageError(key, token, f"{hi - lo + 1:.3g} values; at most {MAX_VALUES} "
                                 "(split the run)")
            out.extend(range(lo, hi + 1))
        elif ":" in token:
            parts = token.split(":")
            if not real:
                raise UsageError(key, token,
                                 f"geometric ranges a:b:n are for real-valued keys{geometric_hint}")
            if len(parts) != 3:
                raise UsageError(key, token, "a geometric range is a:b:n (e.g. 1e-3:1e0:7)")
            a, b = parse_number(key, token, parts[0]), parse_number(key, token, parts[1])
            n = parse_integer(key, token, parts[2])
            if n < 1:
                raise UsageError(key, token, "empty range (a:b:n needs n >= 1)")
            if n > MAX_VALUES:
                raise UsageError(key, token, f"{n:.3g} values; at most {MAX_VALUES} "
                                 "(split the run)")
            if a <= 0 or b <= 0:
                raise UsageError(key, token, "a geometric range needs a > 0 and b > 0")
            if n == 1 and a != b:
                raise UsageError(key, token, "n = 1 needs a == b (or give one value)")
            out.extend(float(v) for v in np.geomspace(a, b, n))
        else:
            out.append(parse_number(key, token, token) if real
                       else parse_integer(key, token, token, hint=int_hint))
    seen = set()
    for v in out:
        if v in seen:
            raise UsageError(key, text, f"duplicate value {v:g}")
        seen.add(v)
    return tuple(out)


def format_value(value: Any) -> str:
    """A value as the grammar writes it (parses back to the same value): lists with commas,
    consecutive integer runs of 3+ as `a..b`, reals with `%.6g`, None as `none`."""
    if value is None:
        return "none"
    if isinstance(value, bool):
        return "1" if value else "0"
    if isinstance(value, (list, tuple)):
        if (len(value) > 2 and all(isinstance(v, int) for v in value)
                and list(value) == list(range(value[0], value[-1] + 1))):
            return f"{value[0]}..{value[-1]}"
        return ",".join(format_value(v) for v in value)
    if isinstance(value, (float, np.floating)):
        short = re.sub(r"e\+?(-?)0*(\d)", r"e\1\2", f"{value:.6g}")  # 1e+08 -> 1e8
        return short if float(short) == value else repr(float(value))
    return str(value)


# --------------------------------------------------------------------------------------------
# Typed keys


@dataclasses.dataclass(frozen=True)
class Key:
    """One typed `key=value` setting.

    **Arguments:**

    - `name`, `kind` (one of `KINDS`), `default`, `help`.
    - Bounds, checked on every number (every item of a list): `ge` / `gt` (lower, inclusive /
      strict), `le` / `lt` (upper); `power_of_two` (integers 1, 2, 4, ...).
    - `choices` (kind `choice`); `none`: a word (e.g. `"none"`, `"auto"`) that means `None`.
    - `unit`: how the bound message names the value (e.g. "a power of two").
    """

    name: str
    kind: str
    default: Any
    help: str
    ge: float | None = None
    gt: float | None = None
    le: float | None = None
    lt: float | None = None
    power_of_two: bool = False
    choices: tuple = ()
    none: str | None = None

    def __post_init__(self):
        if self.kind not in KINDS:
            raise ValueError(f"Key {self.name!r}: kind must be one of {KINDS}, got {self.kind!r}")

    @property
    def is_list(self) -> bool:
        return self.kind in ("ints", "reals")

    def parse(self, text: str) -> Any:
        """`text` -> the typed, checked value; raises `UsageError` naming this key."""
        key = self.name
        if self.none is not None and text == self.none:
            return None
        if self.kind == "text":
            if text.strip() == "":
                raise UsageError(key, text, "empty value")
            return text
        if self.kind == "choice":
            if text not in self.choices:
                raise UsageError(key, text, f"choose one of {', '.join(self.choices)}")
            return text
        if self.kind == "bool":
            if text.lower() in _TRUE:
                return True
            if text.lower() in _FALSE:
                return False
            raise UsageError(key, text, "choose 0 or 1")
        if self.kind in ("int", "real"):
            if "," in text or ".." in text or ":" in text:
                raise UsageError(key, text, "takes one number, not a list or range")
            value = (parse_integer(key, text, text) if self.kind == "int"
                     else parse_number(key, text, text))
            self.check(value, text)
            return value
        values = parse_values(key, text, real=self.kind == "reals")
        if self.kind == "reals":
            values = tuple(float(v) for v in values)
        for v in values:
            self.check(v, text)
        return values

    def check(self, value: float, token: str) -> None:
        """Raise `UsageError` if `value` is outside the key's bounds."""
        fmt = format_value(value)
        if isinstance(value, int) and abs(value) >= 1e16:  # 1e300 read as an integer
            fmt = f"{value:.6g}"
        bad = None
        if self.gt is not None and not value > self.gt:
            bad = f"must be > {format_value(self.gt)}"
        elif self.ge is not None and not value >= self.ge:
            bad = f"must be >= {format_value(self.ge)}"
        elif self.lt is not None and not value < self.lt:
            bad = f"must be < {format_value(self.lt)}"
        elif self.le is not None and not value <= self.le:
            bad = f"must be <= {format_value(self.le)}"
        elif self.power_of_two and not (value >= 1 and int(value) & (int(value) - 1) == 0):
            bad = "must be a power of two (2, 4, 8, 16, ...)"
        if bad:
            where = f" ({fmt})" if fmt != token else ""
            raise UsageError(self.name, token, f"{bad}{where}")

    def default_text(self) -> str:
        if self.default is None and self.none is not None:
            return self.none
        return format_value(self.default)


def split_words(argv: Sequence[str], valid: Sequence[str]) -> dict[str, str]:
    """`key=value` words -> `{key: text}`: each key once, each one of `valid` (else the nearest
    is suggested). Raises `UsageError`."""
    given: dict[str, str] = {}
    for word in argv:
        key, eq, value = word.partition("=")
        if not eq:
            if word.startswith("-"):
                raise UsageError(word, word, "unknown option (only --help); pass key=value")
            raise UsageError(word, word, "not key=value (e.g. depth=2..8)")
        key = key.strip()
        if key not in valid:
            raise UsageError(key, word, suggest(key, valid))
        if key in given:
            raise UsageError(key, word, "given twice")
        given[key] = value
    return given


def parse_keys(argv: Sequence[str], keys: Mapping[str, Key]) -> dict[str, Any]:
    """`key=value` words -> `{key: typed value}` for the keys given (validated, each once)."""
    return {k: keys[k].parse(text) for k, text in split_words(argv, list(keys)).items()}


def key_help(keys: Sequence[Key], *, defaults: Mapping[str, Any] | None = None,
             notes: Mapping[str, str] | None = None, indent: int = 2, width: int = 92) -> list[str]:
    """Help lines: `key=default` then the wrapped help (plus `notes[key]`), for each key."""
    lines = []
    for k in keys:
        if defaults and k.name in defaults:
            default = defaults[k.name]
            default = default if isinstance(default, str) else format_value(default)
        else:
            default = k.default_text()
        lines.append(" " * indent + f"{k.name}={default}")
        text = k.help + (f" {notes[k.name]}" if notes and k.name in notes else "")
        lines.append(textwrap.fill(text, width, initial_indent=" " * (indent + 4),
                                   subsequent_indent=" " * (indent + 4)))
    return lines


def run_command(prog: str, argv: Sequence[str] | None, help_text: Callable[[], str],
                body: Callable[[list[str]], int | None]) -> int:
    """A command's exit codes: `--help`/`-h` anywhere -> `help_text()` on stdout, 0;
    `body(argv)` raising `UsageError` -> one line on stderr, 2; otherwise `body`'s code (0)."""
    argv = sys.argv[1:] if argv is None else list(argv)
    if wants_help(argv):
        sys.stdout.write(help_text())
        return 0
    try:
        code = body(argv)
    except UsageError as err:
        print(err.line(prog), file=sys.stderr)
        return 2
    return 0 if code is None else int(code)
