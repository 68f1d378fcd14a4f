"""Reservation paths: normalisation, glob matching, overlap and lock keys."""

from __future__ import annotations

import pytest

from hub.services.paths import normalise, normalise_prefix, overlaps, parse, pattern
from protocol.errors import ErrorCode, RpcError


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("src/api/x.py", "src/api/x.py"),
        ("./src/api/x.py", "src/api/x.py"),
        ("src//api///x.py", "src/api/x.py"),
        ("src/./api/./x.py", "src/api/x.py"),
        ("  src/x.py  ", "src/x.py"),
        ("src/web/../api/x.py", "src/api/x.py"),
        ("src/api/", "src/api/**"),
        ("src/api/**/", "src/api/**"),
        ("README.md", "README.md"),
        ("src/*.py", "src/*.py"),
        ("docs/héllo wörld.md", "docs/héllo wörld.md"),
    ],
)
def test_normalise_gives_one_spelling_per_path(raw: str, expected: str):
    assert normalise(raw) == expected


@pytest.mark.parametrize(
    "raw",
    [
        "",
        "   ",
        ".",
        "./",
        "a/..",
        "../x",
        "src/../../x",
        "..",
        "/etc/passwd",
        "/",
        "C:\\Windows\\x",
        "c:/x",
        "\\\\server\\share",
        "src/a\x00b",
        "src/a\nb",
        "x" * 1025,
        # Windows-style climbing: a backslash is a separator there.
        "..\\x",
        "a\\..\\..\\x",
        "src/..\\..\\x",
        "src\\..",
        # Control characters are refused wherever they are, never stripped.
        "src/x.py\n",
        "src/x.py\t",
        "\tsrc/x.py",
        "src/x.py\x0b",
        "src/x.py\x85",
        "src/x\u2028.py",
    ],
)
def test_normalise_rejects_what_is_not_inside_the_repository(raw: str):
    with pytest.raises(RpcError) as info:
        normalise(raw)
    assert info.value.code == ErrorCode.INVALID_PARAMS


def test_a_prefix_refuses_what_a_path_refuses():
    for raw in ("src/\n", "a\\..\\..\\x", "../x"):
        with pytest.raises(RpcError):
            normalise_prefix(raw)


def test_normalise_rejects_non_strings():
    with pytest.raises(RpcError) as info:
        normalise(42)
    assert info.value.code == ErrorCode.INVALID_PARAMS


def test_prefixes_may_be_empty_and_keep_their_trailing_slash():
    assert normalise_prefix(None) is None
    assert normalise_prefix("") == ""
    assert normalise_prefix("./") == ""
    assert normalise_prefix("./src/") == "src/"
    assert normalise_prefix("src/api") == "src/api"
    with pytest.raises(RpcError):
        normalise_prefix("../src")


@pytest.mark.parametrize(
    ("glob", "path", "matches"),
    [
        ("src/api/**", "src/api/x.py", True),
        ("src/api/**", "src/api/deep/er/x.py", True),
        ("src/api/**", "src/api", False),
        ("src/api/**", "src/apix/y.py", False),
        ("src/api/**", "src/web/x.py", False),
        ("src/*.py", "src/x.py", True),
        ("src/*.py", "src/api/x.py", False),
        ("src/*.py", "src/x.pyc", False),
        ("**/test_*.py", "tests/unit/test_a.py", True),
        ("**/test_*.py", "test_a.py", False),
        ("**", "anything/at/all", True),
        ("src/?.py", "src/a.py", True),
        ("src/?.py", "src/ab.py", False),
        ("src/[ab].py", "src/b.py", True),
        ("src/[ab].py", "src/c.py", False),
        ("src/[!ab].py", "src/c.py", True),
        ("src/[!ab].py", "src/a.py", False),
        ("src/[a-c]x", "src/bx", True),
        ("src/v1.[ch]", "src/v1.h", True),
        ("src/v1.[ch]", "src/v1xh", False),
        ("src/(a)+*", "src/(a)+yes", True),
        ("src/(a)+*", "src/aa", False),
    ],
)
def test_glob_matching(glob: str, path: str, matches: bool):
    assert parse(glob).is_glob
    assert parse(glob).matches(path) is matches


def test_an_unclosed_bracket_is_an_ordinary_character():
    p = parse("src/[draft.md")
    assert not p.is_glob
    assert p.matches("src/[draft.md")


@pytest.mark.parametrize(
    ("a", "b", "expected"),
    [
        # exact vs exact
        ("src/a.py", "src/a.py", True),
        ("src/a.py", "src/b.py", False),
        ("./src//a.py", "src/a.py", True),
        # glob vs exact
        ("src/api/**", "src/api/x.py", True),
        ("src/api/**", "src/web/x.py", False),
        ("src/*.py", "src/x.py", True),
        ("src/*.py", "src/api/x.py", False),
        ("**", "x", True),
        # glob vs glob (conservative: prefixes and suffixes must agree)
        ("src/api/**", "src/api/v1/*.py", True),
        ("src/api/**", "src/**", True),
        ("src/api/**", "src/web/**", False),
        ("src/*.py", "src/*.js", False),
        ("src/*.py", "src/**", True),
        ("src/*.py", "**/*.py", True),
        ("**", "docs/*.md", True),
        ("docs/*.md", "src/**", False),
        ("src/a*", "src/*b/x", True),  # no real path matches both; reported anyway
    ],
)
def test_overlap_is_symmetric_and_follows_the_documented_rules(a: str, b: str, expected: bool):
    assert overlaps(parse(a), parse(b)) is expected
    assert overlaps(parse(b), parse(a)) is expected


def test_glob_prefix_suffix_and_directory():
    p = pattern("src/api/v1/*.py")
    assert (p.prefix, p.suffix, p.directory) == ("src/api/v1/", ".py", "src/api/v1")
    assert pattern("src/ap*").directory == "src"
    assert pattern("**").directory == ""
    assert pattern("src/api/x.py").directory == "src/api"


def test_lock_keys_make_overlapping_requests_collide():
    """Overlapping patterns share a key that at least one takes exclusive;
    unrelated paths share only shared keys (so they run in parallel)."""

    def collide(a: str, b: str) -> bool:
        ka, kb = dict(parse(a).lock_keys()), dict(parse(b).lock_keys())
        return any(ka[k] or kb[k] for k in ka.keys() & kb.keys())

    assert parse("src/api/x.py").lock_keys() == [
        ("d:", False),
        ("d:src", False),
        ("d:src/api", False),
        ("f:src/api/x.py", True),
    ]
    assert parse("src/api/**").lock_keys() == [("d:", False), ("d:src", False), ("d:src/api", True)]
    for a, b in [
        ("src/a.py", "src/a.py"),
        ("src/api/**", "src/api/x.py"),
        ("src/api/**", "src/api/v1/*.py"),
        ("src/**", "src/api/**"),
        ("**", "README.md"),
        ("src/*.py", "src/x.py"),
    ]:
        assert overlaps(parse(a), parse(b))
        assert collide(a, b), (a, b)
    for a, b in [("src/a.py", "src/b.py"), ("src/api/x.py", "src/web/y.py"), ("a/b", "c/d")]:
        assert not collide(a, b), (a, b)


def test_a_globs_key_range_covers_exactly_its_prefix():
    p = pattern("src/api/**")
    assert p.range_low == "src/api/"
    assert p.range_high == "src/api0"  # "/" + 1
    for path in ("src/api/x", "src/api/\U0010fffe"):
        assert p.range_low <= path < p.range_high
    assert pattern("**").range_low == ""
