"""`.dockerignore` as `docker build` applies it. Each case: the ignore file, the context's files (a trailing `/`
is an empty directory), and exactly what the builder receives (directories with a trailing `/`; the context
always holds a `.dockerignore`). The expected sends are those of Docker's own archiver for the same tree."""

from __future__ import annotations

import pytest

from components import dockerignore as di

CASES = [
    # the cases: `**` also matches no directory at all; a leading `/` or `./` anchors at the root
    ("**/*.env", ["secret.env", "a/b.env", "a/b/c.env", "app.py", "Dockerfile"],
     [".dockerignore", "Dockerfile", "a/", "a/b/", "app.py"]),
    ("*.env", ["secret.env", "a/b.env", "Dockerfile"],
     [".dockerignore", "Dockerfile", "a/", "a/b.env"]),
    ("/tmp\n./log", ["tmp/x", "log/y", "a/tmp/x", "a/log/y", "Dockerfile"],
     [".dockerignore", "Dockerfile", "a/", "a/log/", "a/log/y", "a/tmp/", "a/tmp/x"]),
    ("tmp/", ["tmp/x", "tmpfile", "Dockerfile"],
     [".dockerignore", "Dockerfile", "tmpfile"]),
    # Docker's documented examples: `*` and `?` stay within one path element
    ("*/temp*", ["temp.txt", "a/temp.txt", "a/temporary/x", "a/b/temp.txt", "Dockerfile"],
     [".dockerignore", "Dockerfile", "a/", "a/b/", "a/b/temp.txt", "temp.txt"]),
    ("*/*/temp*", ["temp.txt", "a/temp.txt", "a/b/temp.txt", "a/b/c/temp.txt", "Dockerfile"],
     [".dockerignore", "Dockerfile", "a/", "a/b/", "a/b/c/", "a/b/c/temp.txt", "a/temp.txt", "temp.txt"]),
    ("temp?", ["temp1", "temp", "temp12", "a/temp1", "Dockerfile"],
     [".dockerignore", "Dockerfile", "a/", "a/temp1", "temp", "temp12"]),
    # an excluded directory takes everything below with it, and is not sent itself
    ("docs", ["docs/a.md", "docs/b/c.md", "docsite/x", "Dockerfile"],
     [".dockerignore", "Dockerfile", "docsite/", "docsite/x"]),
    ("empty", ["empty/", "full/x", "Dockerfile"],
     [".dockerignore", "Dockerfile", "full/", "full/x"]),
    ("", ["empty/", "Dockerfile"],
     [".dockerignore", "Dockerfile", "empty/"]),
    ("a/**", ["a/x", "a/y/z", "ab", "Dockerfile"],
     [".dockerignore", "Dockerfile", "a/", "ab"]),
    ("foo*", ["foo/x", "foobar", "barfoo", "Dockerfile"],
     [".dockerignore", "Dockerfile", "barfoo"]),
    ("**/node_modules", ["node_modules/x", "web/node_modules/y", "web/src/z", "Dockerfile"],
     [".dockerignore", "Dockerfile", "web/", "web/src/", "web/src/z"]),
    (".git", [".git/HEAD", ".git/objects/ab/cd", "a/.git", "Dockerfile"],
     [".dockerignore", "Dockerfile", "a/", "a/.git"]),
    ("**/*.pyc\n__pycache__", ["__pycache__/a.pyc", "pkg/__pycache__/b.pyc", "pkg/m.py", "pkg/m.pyc", "Dockerfile"],
     [".dockerignore", "Dockerfile", "pkg/", "pkg/__pycache__/", "pkg/m.py"]),
    ("a/**/b", ["a/b", "a/x/b", "a/x/y/b", "a/bb", "b", "Dockerfile"],
     [".dockerignore", "Dockerfile", "a/", "a/bb", "a/x/", "a/x/y/", "b"]),
    # exceptions: the last matching pattern wins
    ("*.md\n!README.md", ["README.md", "CHANGES.md", "a/README.md", "Dockerfile"],
     [".dockerignore", "Dockerfile", "README.md", "a/", "a/README.md"]),
    ("!README.md\n*.md", ["README.md", "CHANGES.md", "Dockerfile"],
     [".dockerignore", "Dockerfile"]),
    ("!/keep\n/keep", ["keep", "Dockerfile"],
     [".dockerignore", "Dockerfile"]),
    ("**/*.env\n!config/app.env", ["config/app.env", "config/db.env", "x.env", "Dockerfile"],
     [".dockerignore", "Dockerfile", "config/", "config/app.env"]),
    ("**/.env*\n!**/.env.example", [".env", ".env.local", ".env.example", "app/.env", "app/.env.example",
                                    "Dockerfile"],
     [".dockerignore", ".env.example", "Dockerfile", "app/", "app/.env.example"]),
    ("*.log\n!important.log\nlogs/", ["a.log", "important.log", "logs/important.log", "Dockerfile"],
     [".dockerignore", "Dockerfile", "important.log"]),
    ("**\n!src", ["src/a.py", "src/b/c.py", "tests/t.py", "setup.py", "Dockerfile"],
     [".dockerignore", "Dockerfile", "src/", "src/a.py", "src/b/", "src/b/c.py"]),
    ("*\n!*.py", ["a.py", "b.txt", "src/c.py", "Dockerfile"],
     [".dockerignore", "Dockerfile", "a.py"]),
    # an exception that names a path inside an excluded directory re-includes it (the directory entry stays out)
    ("docs\n!docs/keep.md", ["docs/keep.md", "docs/other.md", "docs/sub/keep.md", "Dockerfile"],
     [".dockerignore", "Dockerfile", "docs/keep.md"]),
    ("a\n!a/b", ["a/b/c", "a/b/d/e", "a/x", "Dockerfile"],
     [".dockerignore", "Dockerfile", "a/b/", "a/b/c", "a/b/d/", "a/b/d/e"]),
    ("secrets\n!secrets/public\nsecrets/public/private.key",
     ["secrets/key", "secrets/public/cert.pem", "secrets/public/private.key", "Dockerfile"],
     [".dockerignore", "Dockerfile", "secrets/public/", "secrets/public/cert.pem"]),
    # ... but one that does not start with the directory's path cannot reach into it (Docker's walk skips it)
    ("docs\n!**/keep.md", ["docs/keep.md", "keep.md", "src/keep.md", "Dockerfile"],
     [".dockerignore", "Dockerfile", "keep.md", "src/", "src/keep.md"]),
    # the Dockerfile and .dockerignore are always sent, even from an excluded directory
    ("Dockerfile\n.dockerignore", ["Dockerfile", "app.py"],
     [".dockerignore", "Dockerfile", "app.py"]),
    ("*", ["Dockerfile", "app.py", "src/x"],
     [".dockerignore", "Dockerfile"]),
    ("**", ["a", "b/c", "Dockerfile"],
     [".dockerignore", "Dockerfile"]),
    ("build\n", ["build/Dockerfile", "build/out.bin", "src/x"],
     [".dockerignore", "build/Dockerfile", "src/", "src/x"]),
    # cleaning: a trailing `/` goes, so `*/` is `*`; `..` is resolved lexically and cannot leave the root
    ("*/", ["a/x", "b", "Dockerfile"],
     [".dockerignore", "Dockerfile"]),
    ("../outside\na/../b", ["outside", "b", "a/c", "Dockerfile"],
     [".dockerignore", "Dockerfile", "a/", "a/c", "outside"]),
    # syntax: comments only in column 0, whitespace trimmed (CRLF too), classes, escapes, a UTF-8 BOM
    ("# a comment\n #notacomment\n\n   spaced.txt   \r\n", ["# a comment", "#notacomment", "spaced.txt", "x",
                                                            "Dockerfile"],
     ["# a comment", ".dockerignore", "Dockerfile", "x"]),
    ("[ab].txt\n[^c]x.log", ["a.txt", "b.txt", "c.txt", "cx.log", "dx.log", "Dockerfile"],
     [".dockerignore", "Dockerfile", "c.txt", "cx.log"]),
    ("\\*.txt", ["*.txt", "a.txt", "Dockerfile"],
     [".dockerignore", "Dockerfile", "a.txt"]),
    ("\ufeffbom.txt", ["bom.txt", "Dockerfile"],
     [".dockerignore", "Dockerfile"]),
    ("a b.txt\n  c\td.txt", ["a b.txt", "c\td.txt", "Dockerfile"],
     [".dockerignore", "Dockerfile"]),
]


def tree(paths: list[str]):
    """A `list_dir` over a tree given as paths (a trailing `/` is an empty directory)."""
    children: dict[str, set[tuple[str, bool]]] = {}
    for p in paths:
        parts = p.rstrip("/").split("/")
        for k in range(len(parts)):
            is_dir = k < len(parts) - 1 or p.endswith("/")
            children.setdefault("/".join(parts[:k]), set()).add((parts[k], is_dir))
    return lambda d: children.get(d, ())


def sent(ignore: str, files: list[str], dockerfile: str) -> list[str]:
    patterns = di.compile_patterns(di.parse(ignore))
    chosen = di.select(tree([*files, ".dockerignore"]), patterns, always=(".dockerignore", dockerfile))
    return sorted(p + "/" if is_dir else p for p, is_dir in chosen)


@pytest.mark.parametrize("ignore,files,expected", CASES, ids=[repr(c[0]) for c in CASES])
def test_what_the_builder_receives(ignore, files, expected):
    dockerfile = next(f for f in files if f.endswith("Dockerfile"))
    assert sent(ignore, files, dockerfile) == expected


def test_parents_come_before_their_children():
    chosen = di.select(tree(["b/c/d", "a", "b/e"]), [])
    assert [p for p, _ in chosen] == ["a", "b", "b/c", "b/c/d", "b/e"]


def test_the_dockerfile_is_sent_even_where_docker_would_lose_it():
    # `**/b` excludes directory `b`, which Docker's own re-include check (one parent, at the pattern's depth)
    # misses: `docker build` then fails to find its Dockerfile; here it is sent, as Docker means to
    assert sent("**/b", ["b/Dockerfile", "b/x"], "b/Dockerfile") == [".dockerignore", "b/Dockerfile"]


@pytest.mark.parametrize("line,pattern", [
    ("/tmp", "tmp"), ("./log", "log"), ("tmp/", "tmp"), ("a//b/./c/", "a/b/c"), ("!/keep", "!keep"),
    ("! ./x/../y ", "!y"), ("/", "/"), ("..", ".."), ("/../x", "x"), ("  spaced  ", "spaced"),
])
def test_lines_are_cleaned_as_the_docker_cli_reads_them(line, pattern):
    assert di.parse(line) == [(1, pattern)]


def test_comments_blank_lines_and_line_numbers():
    assert di.parse("# c\n\n  \na\r\n #b\n") == [(4, "a"), (5, "#b")]


@pytest.mark.parametrize("path,clean", [
    ("", "."), (".", "."), ("a/b/..", "a"), ("a/../..", ".."), ("../a/..", ".."), ("/..", "/"), ("//a//", "/a"),
    ("a/./b/", "a/b"),
])
def test_go_clean(path, clean):
    assert di.go_clean(path) == clean


@pytest.mark.parametrize("bad", ["[", "a[", "*[", "[]a]", "[a-]", "x[^]", "a\\", "!"])
def test_patterns_docker_refuses_are_refused_with_their_line(bad):
    with pytest.raises(di.IgnoreFileError) as err:
        di.compile_patterns(di.parse(f"ok\n{bad}\n"))
    assert err.value.line == 2


def test_a_pattern_docker_would_choke_on_later_is_refused_now():
    # `filepath.Match(p, ".")` stops at the first mismatch, so moby accepts `x*[ab`, then fails compiling it in
    # the middle of the walk and sends a truncated context; here it is refused up front
    with pytest.raises(di.IgnoreFileError, match="not a valid pattern"):
        di.compile_patterns(["x*[ab"])


@pytest.mark.parametrize("pattern,path,parent,expected", [
    ("a", "a/b/c", None, True),    # no parent results: the parents themselves are tried
    ("a", "a/b/c", [False], False),  # the parent's results stand for the parents
    ("a", "x/a", None, False),
    ("**/a", "x/a", None, True),
    ("**a", "x/ba", None, True),   # `**` then text: any suffix
])
def test_matches_with_and_without_parent_results(pattern, path, parent, expected):
    assert di.matches(di.compile_patterns([pattern]), path, parent)[0] is expected
