"""Reservation paths: normalisation, glob matching and overlap.

A reservation names one repo-relative file path (``src/api/auth.py``) or a
glob pattern over paths:

- ``*`` matches any run of characters within one path segment, ``?`` one
  character (never ``/``), ``[abc]`` / ``[a-z]`` / ``[!abc]`` one character
  of (not of) a set, and ``**`` any run of characters across ``/``
  (``src/api/**`` is everything under ``src/api``).
- A trailing ``/`` names a whole directory: ``src/api/`` is ``src/api/**``.

Normalisation strips surrounding whitespace, ``./`` segments and repeated
``/``, and resolves ``a/../b`` to ``b``. An empty path, an absolute path
(``/etc/passwd``, ``C:\\x``), a path that climbs out of the repository
(``../x``, and Windows' ``..\\x`` or ``a\\..\\..\\x``), and control characters
(anywhere, trailing ones too) are rejected with INVALID_PARAMS.

Two patterns overlap when some file path could match both:

- path vs path: they are equal;
- glob vs path: the glob matches the path;
- glob vs glob (conservative): every path a glob matches starts with its
  *literal prefix* (the text before its first wildcard) and ends with its
  *literal suffix* (the text after its last wildcard). Two globs overlap
  unless their prefixes disagree (neither is a prefix of the other) or their
  suffixes disagree (neither is a suffix of the other). So ``src/api/**``
  and ``src/web/**`` never overlap, nor do ``src/*.py`` and ``src/*.js``;
  ``src/*.py`` and ``src/**`` do. The rule may report an overlap that no
  real path has (``src/a*`` vs ``src/*b/x``), never the reverse.

Cross-instance locking (see :mod:`hub.services.reservations`) rests on one
property of these rules: every path a glob matches lies under the glob's
*directory* (its literal prefix cut back to the last ``/``), and two globs
that overlap have directories where one contains the other.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from functools import lru_cache

from protocol.errors import invalid_params

MAX_PATH_LENGTH = 1024
#: The largest code point; it bounds the key range of a glob with no
#: literal prefix, so it may not appear in a path.
_TOP = "\U0010ffff"
_ABSOLUTE = re.compile(r"^(/|\\|[A-Za-z]:[\\/])")
_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f\u2028\u2029" + _TOP + "]")
#: Characters that are special in a regex (Python ``re`` and PostgreSQL
#: ARE alike); each is escaped with a backslash, which both engines read
#: as "this character, literally".
_REGEX_SPECIAL = frozenset(".^$|?*+()[]{}\\")
_CLASS_SPECIAL = frozenset("\\]^-[")


@dataclass(frozen=True, slots=True)
class Pattern:
    """A normalised path or glob and what overlap and locking need of it."""

    path: str
    is_glob: bool
    #: Anchored regex (globs only), valid in Python ``re`` and PostgreSQL.
    regex: str | None
    #: Text every matching path starts with / ends with (the whole path
    #: for an exact path).
    prefix: str
    suffix: str

    @property
    def directory(self) -> str:
        """The deepest directory every matching path lies under ('' = root)."""
        source = self.prefix if self.is_glob else self.path
        return source.rpartition("/")[0]

    def matches(self, path: str) -> bool:
        if self.regex is None:
            return path == self.path
        return _compiled(self.regex).match(path) is not None

    def lock_keys(self) -> list[tuple[str, bool]]:
        """Advisory lock keys as ``(key, exclusive)``: shared on each
        ancestor directory, exclusive on the pattern's own key (its file,
        or for a glob its directory). Two patterns that may overlap then
        always hold conflicting locks on some key."""
        return list(_lock_keys(self))

    @property
    def range_low(self) -> str:
        """Matching paths sort (bytewise) at or after this ..."""
        return self.prefix if self.is_glob else self.path

    @property
    def range_high(self) -> str:
        """... and before this (globs only): the prefix's successor."""
        return _successor(self.prefix)


def _ancestors(directory: str) -> list[str]:
    """Keys of the root and every directory down to ``directory``."""
    keys = ["d:"]
    if directory:
        parts = directory.split("/")
        keys.extend("d:" + "/".join(parts[: i + 1]) for i in range(len(parts)))
    return keys


def _successor(prefix: str) -> str:
    """The smallest string greater than every string starting with
    ``prefix`` (UTF-8 byte order equals code point order)."""
    chars = list(prefix)
    while chars:
        code = ord(chars[-1]) + 1
        if 0xD800 <= code <= 0xDFFF:
            code = 0xE000
        if code <= 0x10FFFF:
            chars[-1] = chr(code)
            return "".join(chars)
        chars.pop()
    return _TOP


def normalise(raw: object) -> str:
    """The canonical form of a repo-relative path or glob; INVALID_PARAMS
    for anything that does not name something inside the repository."""
    if not isinstance(raw, str):
        raise invalid_params("a path must be a string", path=raw)
    # Checked before stripping: a trailing newline or tab is refused, not
    # silently dropped. Only spaces are stripped.
    if _CONTROL.search(raw):
        raise invalid_params("a path must not contain control characters", path=raw)
    value = raw.strip(" ")
    if not value:
        raise invalid_params("a path must not be empty", path=raw)
    if _ABSOLUTE.match(value):
        raise invalid_params(
            f"{raw!r} is absolute; give a path relative to the repository root", path=raw
        )
    parts: list[str] = []
    for segment in value.split("/"):
        if segment in ("", "."):
            continue
        if "\\" in segment and ".." in segment.split("\\"):
            # Windows reads a backslash as a separator: a\..\..\x climbs out.
            raise invalid_params(
                f"{raw!r} has a '..' between backslashes; separate with '/'", path=raw
            )
        if segment == "..":
            if not parts:
                raise invalid_params(f"{raw!r} climbs out of the repository", path=raw)
            parts.pop()
            continue
        parts.append(segment)
    if not parts:
        raise invalid_params(f"{raw!r} names no file inside the repository", path=raw)
    if value.endswith("/") and parts[-1] != "**":
        parts.append("**")
    path = "/".join(parts)
    if len(path) > MAX_PATH_LENGTH:
        raise invalid_params(
            f"a path is {len(path)} characters; the limit is {MAX_PATH_LENGTH}", path=raw[:100]
        )
    return path


def normalise_prefix(raw: str | None) -> str | None:
    """A listing/revoke prefix: like a path, but may be empty (everything)
    and keeps a trailing ``/`` (``src/`` is not ``src2/``)."""
    if raw is None:
        return None
    if _CONTROL.search(raw):
        raise invalid_params("a path must not contain control characters", path=raw)
    value = raw.strip(" ")
    if not value or value in (".", "./"):
        return ""
    trailing = value.endswith("/")
    path = normalise(value.rstrip("/") or ".")
    return path + "/" if trailing else path


@lru_cache(maxsize=4096)
def _compiled(regex: str) -> re.Pattern[str]:
    return re.compile(regex)


def parse(raw: object) -> Pattern:
    """Normalise and analyse one requested path."""
    if isinstance(raw, str):
        # Agents request the same paths over and over.
        return _parse(raw)
    return pattern(normalise(raw))


@lru_cache(maxsize=8192)
def _parse(raw: str) -> Pattern:
    return pattern(normalise(raw))


@lru_cache(maxsize=8192)
def _lock_keys(pattern: Pattern) -> tuple[tuple[str, bool], ...]:
    if pattern.is_glob:
        own = "d:" + pattern.directory
        ancestors = _ancestors(pattern.directory)[:-1]
    else:
        own = "f:" + pattern.path
        ancestors = _ancestors(pattern.directory)
    return (*((key, False) for key in ancestors), (own, True))


@lru_cache(maxsize=8192)
def pattern(path: str) -> Pattern:
    """Analyse an already normalised path."""
    tokens = _tokens(path)
    if all(kind == "lit" for kind, _ in tokens):
        return Pattern(path, False, None, path, path)
    prefix = "".join(text for _, text in _leading_literals(tokens))
    suffix = "".join(text for _, text in reversed(_leading_literals(tokens[::-1])))
    regex = "^" + "".join(_render(kind, text) for kind, text in tokens) + "$"
    return Pattern(path, True, regex, prefix, suffix)


def _leading_literals(tokens: list[tuple[str, str]]) -> list[tuple[str, str]]:
    found = []
    for token in tokens:
        if token[0] != "lit":
            break
        found.append(token)
    return found


def _tokens(path: str) -> list[tuple[str, str]]:
    """Split a glob into ``lit`` characters and wildcards (``any`` = ``**``,
    ``star``, ``one``, ``class`` with the set's members)."""
    tokens: list[tuple[str, str]] = []
    i, n = 0, len(path)
    while i < n:
        char = path[i]
        if path.startswith("**", i):
            tokens.append(("any", "**"))
            i += 2
            while i < n and path[i] == "*":
                i += 1
        elif char == "*":
            tokens.append(("star", "*"))
            i += 1
        elif char == "?":
            tokens.append(("one", "?"))
            i += 1
        elif char == "[" and (end := _class_end(path, i)) > 0:
            tokens.append(("class", path[i + 1 : end]))
            i = end + 1
        else:
            tokens.append(("lit", char))
            i += 1
    return tokens


def _class_end(path: str, start: int) -> int:
    """Index of the ``]`` closing the set opened at ``start``, or -1 (then
    the ``[`` is an ordinary character). A ``]`` first in the set is a member."""
    j = start + 1
    if j < len(path) and path[j] in "!^":
        j += 1
    if j < len(path) and path[j] == "]":
        j += 1
    end = path.find("]", j)
    if end < 0 or "/" in path[start:end]:
        return -1
    return end


def _render(kind: str, text: str) -> str:
    if kind == "lit":
        return "\\" + text if text in _REGEX_SPECIAL else text
    if kind == "any":
        return ".*"
    if kind == "star":
        return "[^/]*"
    if kind == "one":
        return "[^/]"
    negate = text[:1] in ("!", "^")
    members = text[1:] if negate else text
    body = []
    for k, char in enumerate(members):
        if char == "-" and 0 < k < len(members) - 1:
            body.append("-")  # a range, as in a-z
        elif char in _CLASS_SPECIAL:
            body.append("\\" + char)
        else:
            body.append(char)
    return ("[^/" if negate else "[") + "".join(body) + "]"


def overlaps(a: Pattern, b: Pattern) -> bool:
    """Could some file path match both? (The SQL in reservations.py
    applies the same rules; see the module doc.)"""
    if not a.is_glob and not b.is_glob:
        return a.path == b.path
    if not b.is_glob:
        return a.matches(b.path)
    if not a.is_glob:
        return b.matches(a.path)
    return _agree(a.prefix, b.prefix, str.startswith) and _agree(a.suffix, b.suffix, str.endswith)


def _agree(x: str, y: str, test: Callable[[str, str], bool]) -> bool:
    """One of the two is a prefix (``startswith``) / suffix (``endswith``) of the other."""
    return test(x, y) or test(y, x)
