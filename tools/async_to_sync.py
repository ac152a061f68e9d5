#!/usr/bin/env python
"""Generate the sync modules of the package (and their tests) from the async ones.

The asyncio code is the one source: ``client/client_async.py`` becomes
``client/client.py``, ``client/handles_async.py`` becomes
``client/handles.py`` and ``tests/test_client_async.py`` becomes
``tests/test_client.py``, the way psycopg generates ``connection.py`` from
``connection_async.py``. The conversion works on tokens, so comments and
docstrings survive:

* ``async`` before ``def``/``with``/``for`` and every ``await`` are dropped,
  and so are parentheses that only wrapped an awaited primary:
  ``(await client.get_queue(q)).depth`` becomes ``client.get_queue(q).depth``;
* names are renamed by :data:`RENAMES` (``AsyncClient`` -> ``Client``,
  ``__aenter__`` -> ``__enter__``, ...), in code, strings and comments alike;
  a dotted entry (``asyncio.sleep`` -> ``time.sleep``) renames an attribute
  of a module, so the async source must import the sync module too (it does
  whenever it uses it for something else, e.g. ``time.monotonic``);
* where the two worlds really differ, the async source says so with a block
  that is valid Python in both::

      if True:  # ASYNC
          ...async-only code...
      else:
          ...what the sync module has instead...

  and the sync module keeps only the ``else`` body.

The result goes through ``ruff check --fix --select I,F401,SIM117`` (imports
sorted, imports only async code used removed, and ``with`` statements merged
that had to be nested in the async source, as in ``with pytest.raises(E):``
around ``async with conn.transaction():``) and ``ruff format``, so it reads
like hand-written code. Run it after changing an async source::

    python tools/async_to_sync.py            # rewrite the generated files
    python tools/async_to_sync.py --check    # exit 1 if one is stale (CI, tests)
"""

from __future__ import annotations

import argparse
import io
import keyword
import re
import subprocess
import sys
import tokenize
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

#: async source -> generated sync module, relative to the repository root.
SOURCES: dict[str, str] = {
    "python/catbird/client/client_async.py": "python/catbird/client/client.py",
    "python/catbird/client/handles_async.py": "python/catbird/client/handles.py",
    "tests/test_client_async.py": "tests/test_client.py",
}

#: Names of the async world and their sync twins, matched as whole words.
RENAMES: dict[str, str] = {
    "AsyncClient": "Client",
    "AsyncConnection": "Connection",
    "AsyncConnectionPool": "ConnectionPool",
    "AsyncExecutor": "Executor",
    "AsyncFlowHandle": "FlowHandle",
    "AsyncGenerator": "Generator",
    "AsyncIterator": "Iterator",
    "AsyncReader": "Reader",
    "AsyncReaderHandler": "ReaderHandler",
    "AsyncRunHandle": "RunHandle",
    "AsyncTaskHandle": "TaskHandle",
    "__aenter__": "__enter__",
    "__aexit__": "__exit__",
    "aclose": "close",
    "aclosing": "closing",
    "aconn": "conn",
    "asynccontextmanager": "contextmanager",
    "asyncio.sleep": "time.sleep",
    "client_async": "client",
    "handles_async": "handles",
    "test_client_async": "test_client",
}

_WORD = re.compile(
    r"\b(" + "|".join(map(re.escape, sorted(RENAMES, key=len, reverse=True))) + r")\b"
)
_AWAIT = re.compile(r"\bawait |\basync (?=with |for |def )")
_ASYNC_BLOCK = re.compile(r"^(?P<indent>[ \t]*)if True:  # ASYNC\n", re.M)


def _rename(text: str) -> str:
    return _WORD.sub(lambda m: RENAMES[m.group(1)], text)


def _to_sync(text: str, prose: bool) -> str:
    """Rename; in strings and comments (examples in docstrings) also drop ``await``."""
    text = _rename(text)
    return _AWAIT.sub("", text) if prose else text


def _indent_of(line: str) -> int:
    return len(line) - len(line.lstrip(" "))


def _keep_sync_branches(source: str) -> str:
    """Replace each ``if True:  # ASYNC ... else: ...`` block by its dedented else body."""
    while (match := _ASYNC_BLOCK.search(source)) is not None:
        lines = source[match.end() :].splitlines(keepends=True)
        base = len(match.group("indent"))
        i = 0
        while i < len(lines) and (not lines[i].strip() or _indent_of(lines[i]) > base):
            i += 1
        if i == len(lines) or lines[i].strip() != "else:" or _indent_of(lines[i]) != base:
            line_no = source[: match.start()].count("\n") + 1
            raise SystemExit(f"line {line_no}: an `if True:  # ASYNC` block needs an `else:`")
        j = i + 1
        while j < len(lines) and (not lines[j].strip() or _indent_of(lines[j]) > base):
            j += 1
        # Keep trailing blank lines of the else body outside it.
        while j > i + 1 and not lines[j - 1].strip():
            j -= 1
        body = [ln[4:] if ln.strip() else ln for ln in lines[i + 1 : j]]
        source = source[: match.start()] + "".join(body) + "".join(lines[j:])
    return source


def convert(source: str, origin: str) -> str:
    """The sync module for an async ``source`` read from ``origin``."""
    text = _keep_sync_branches(source)
    text = _convert_tokens(text)
    header = (
        "# WARNING: generated by tools/async_to_sync.py, do not edit: edit\n"
        f"# {origin} and run `python tools/async_to_sync.py`.\n"
    )
    return _ruff(header + text)


def _matching_brackets(tokens: list[tokenize.TokenInfo]) -> dict[int, int]:
    """Index of each opening bracket token -> index of its closing one."""
    pairs: dict[int, int] = {}
    stack: list[int] = []
    for index, tok in enumerate(tokens):
        if tok.type == tokenize.OP and tok.string in "([{":
            stack.append(index)
        elif tok.type == tokenize.OP and tok.string in ")]}":
            pairs[stack.pop()] = index
    return pairs


def _is_trailer_start(tokens: list[tokenize.TokenInfo], index: int) -> bool:
    """Whether the bracket at ``index`` calls or subscripts what precedes it."""
    before = tokens[index - 1] if index else None
    if before is None:
        return False
    if before.type == tokenize.NAME:
        return not keyword.iskeyword(before.string)
    return before.type == tokenize.OP and before.string in ")]"


def _awaited_primary_parens(
    tokens: list[tokenize.TokenInfo], pairs: dict[int, int], index: int
) -> tuple[int, int] | None:
    """For ``await`` at ``index``: the indexes of ``(`` and ``)`` to drop, if any.

    Only a grouping ``(await name.attr(args)[i])`` qualifies: once ``await``
    is gone its content is a primary, which needs no parentheses anywhere.
    """
    opening = index - 1
    if opening < 0 or tokens[opening].string != "(" or _is_trailer_start(tokens, opening):
        return None
    closing = pairs.get(opening)
    if closing is None:
        return None
    i = index + 1
    if tokens[i].type != tokenize.NAME or keyword.iskeyword(tokens[i].string):
        return None
    while i < closing:
        tok = tokens[i]
        name = tok.type == tokenize.NAME and not keyword.iskeyword(tok.string)
        if name or tok.type == tokenize.NL or (tok.type == tokenize.OP and tok.string == "."):
            i += 1
        elif tok.type == tokenize.OP and tok.string in "([" and _is_trailer_start(tokens, i):
            i = pairs[i] + 1
        else:
            return None
    return opening, closing


def _convert_tokens(source: str) -> str:
    """Drop ``async``/``await`` and rename, editing right to left on each line."""
    tokens = list(tokenize.generate_tokens(io.StringIO(source).readline))
    pairs = _matching_brackets(tokens)
    lines = source.splitlines(keepends=True)
    edits: dict[int, list[tuple[int, int, str]]] = {}
    skip: set[int] = set()

    def edit(row: int, start: int, end: int, new: str) -> None:
        edits.setdefault(row, []).append((start, end, new))

    def drop_token(index: int) -> None:
        (row, start), (_, end) = tokens[index].start, tokens[index].end
        edit(row, start, end, "")

    for index, tok in enumerate(tokens):
        if index in skip:
            continue
        following = tokens[index + 1] if index + 1 < len(tokens) else None
        if tok.type == tokenize.NAME and tok.string == "await":
            parens = _awaited_primary_parens(tokens, pairs, index)
            if parens is not None:
                for paren in parens:
                    drop_token(paren)
                    skip.add(paren)
        attribute = tokens[index + 2] if index + 2 < len(tokens) else None
        if (
            tok.type == tokenize.NAME
            and following is not None
            and following.string == "."
            and attribute is not None
            and attribute.type == tokenize.NAME
            and attribute.end[0] == tok.start[0]
            and f"{tok.string}.{attribute.string}" in RENAMES
        ):
            dotted = RENAMES[f"{tok.string}.{attribute.string}"]
            edit(tok.start[0], tok.start[1], attribute.end[1], dotted)
            skip.add(index + 2)
            continue
        drop = tok.type == tokenize.NAME and (
            tok.string == "await"
            or (
                tok.string == "async"
                and following is not None
                and following.string in {"def", "with", "for"}
            )
        )
        (srow, scol), (erow, ecol) = tok.start, tok.end
        if drop:
            line = lines[srow - 1]
            end = ecol + 1 if ecol < len(line) and line[ecol] == " " else ecol
            edit(srow, scol, end, "")
            continue
        if tok.type not in (tokenize.NAME, tokenize.STRING, tokenize.COMMENT):
            continue
        prose = tok.type != tokenize.NAME
        if _to_sync(tok.string, prose) == tok.string:
            continue
        for row in range(srow, erow + 1):
            start = scol if row == srow else 0
            end = ecol if row == erow else len(lines[row - 1])
            edit(row, start, end, _to_sync(lines[row - 1][start:end], prose))
    out = list(lines)
    for row, row_edits in edits.items():
        line = out[row - 1]
        for start, end, new in sorted(row_edits, reverse=True):
            line = line[:start] + new + line[end:]
        out[row - 1] = line
    return "".join(out)


def _ruff(text: str) -> str:
    ruff = [sys.executable, "-m", "ruff"]
    fixed = subprocess.run(
        [
            *ruff,
            "check",
            "--fix",
            "--select",
            "I,F401,SIM117",
            "--quiet",
            "--exit-zero",
            "--stdin-filename",
            "generated.py",
            "-",
        ],
        input=text,
        capture_output=True,
        text=True,
        check=True,
        cwd=ROOT,
    ).stdout
    return subprocess.run(
        [*ruff, "format", "--quiet", "--stdin-filename", "generated.py", "-"],
        input=fixed,
        capture_output=True,
        text=True,
        check=True,
        cwd=ROOT,
    ).stdout


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="only report stale files")
    args = parser.parse_args(argv)
    stale = []
    for source, target in SOURCES.items():
        wanted = convert((ROOT / source).read_text(), source)
        path = ROOT / target
        if path.exists() and path.read_text() == wanted:
            continue
        stale.append(target)
        if not args.check:
            path.write_text(wanted)
            print(f"wrote {target}")
    if args.check and stale:
        for target in stale:
            print(f"{target} is stale: run `python tools/async_to_sync.py`", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
