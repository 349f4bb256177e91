#!/usr/bin/env python3
"""Prints figures about the source tree, one `<name> <value> <unit>` line each:

  src_http_lines <n> lines    every line of src/http/**/*.rs (the HTTP layer, its tests included)
  unsafe_blocks <n> blocks    `unsafe {` blocks in src/
  import_circles <n> circles  groups of modules that import one another in a loop
  src_lines_non_test <n> lines  lines of src/ outside `#[cfg(test)]` items and test-only files
  longest_fn_lines <n> lines  the longest non-test function, from its `fn` line to its closing brace
                              (the function is named on stderr)

A module is a file (`mod.rs` stands for its directory). Module A imports B when A names a path
into B (`use crate::b::...`, `super::b::...`, or a `crate::b::...` path in code). A module and
its own ancestors are left out of each other's imports: a parent declares its children, and a
child using its parent's private items is how Rust scopes them. Each strongly connected group
of two or more modules is one circle.

Usage: code_figures.py [ROOT]   (ROOT defaults to the repository holding this script)
"""
import bisect
import pathlib
import re
import sys

ROOT = pathlib.Path(sys.argv[1] if len(sys.argv) > 1 else pathlib.Path(__file__).resolve().parent.parent)
SRC = ROOT / "src"


def module_of(path):
    parts = list(path.relative_to(SRC).with_suffix("").parts)
    if parts[-1] in ("mod", "lib", "main"):
        parts.pop()
    return tuple(parts)


def code_lines(text):
    """The text without comments and string literals' contents, line by line."""
    text = re.sub(r'"(\\.|[^"\\])*"', '""', text)
    for line in text.splitlines():
        yield line.split("//", 1)[0]


def blank_literals(text):
    """The text with comments, string and char literals blanked, newlines kept, so braces match."""
    out, i, n = [], 0, len(text)
    while i < n:
        if text.startswith("//", i):
            j = text.find("\n", i)
            j = n if j < 0 else j
        elif text.startswith("/*", i):
            depth, j = 1, i + 2
            while j < n and depth:
                step = text[j : j + 2]
                depth += (step == "/*") - (step == "*/")
                j += 2 if step in ("/*", "*/") else 1
        elif (m := re.match(r'r(#*)"', text[i : i + 10])) and not (i and (text[i - 1].isalnum() or text[i - 1] == "_")):
            close = text.find('"' + m.group(1), i + len(m.group(0)))
            j = n if close < 0 else close + 1 + len(m.group(1))
        elif text[i] == '"':
            j = i + 1
            while j < n and text[j] != '"':
                j += 2 if text[j] == "\\" else 1
            j += 1
        elif m := re.match(r"'(\\.[^']*|[^'\\])'", text[i : i + 12]):
            j = i + len(m.group(0))
        else:
            out.append(text[i])
            i += 1
            continue
        out.append(re.sub(r"[^\n]", " ", text[i:j]))
        i = j
    return "".join(out)


def block_end(masked, start):
    """The index of the brace that closes the block opening at or after `start`; None when a `;`
    ends the item first (a declaration such as `mod x;`)."""
    depth = 0
    for k in range(start, len(masked)):
        ch = masked[k]
        if ch == ";" and depth == 0:
            return None
        depth += (ch == "{") - (ch == "}")
        if ch == "}" and depth == 0:
            return k
    return None


FN = re.compile(r"^\s*(pub(\([^)]*\))?\s+)?((const|async|unsafe|extern\s+\"C\")\s+)*fn\s+(\w+)")


def shape(files):
    """(non-test lines, (length, where, name) of the longest non-test function)."""
    test_only = set()
    for f in files:
        base = f.parent if f.name in ("mod.rs", "lib.rs", "main.rs") else f.with_suffix("")
        for m in re.finditer(r"#\[cfg\(test\)\]\s*(pub(\([^)]*\))?\s+)?mod\s+(\w+)\s*;", f.read_text()):
            test_only |= {base / (m.group(3) + ".rs"), base / m.group(3) / "mod.rs"}
    total, longest = 0, (0, "", "")
    for f in files:
        if f in test_only:
            continue
        masked = blank_literals(f.read_text())
        lines = masked.split("\n")
        if lines and lines[-1] == "":
            lines.pop()
        starts = [0]
        for line in lines:
            starts.append(starts[-1] + len(line) + 1)
        line_of = lambda index: bisect.bisect_right(starts, index) - 1
        test = [False] * len(lines)
        for m in re.finditer(r"#!?\[cfg\(test\)\]", masked):
            if m.group(0).startswith("#!"):
                test = [True] * len(lines)
                break
            end = block_end(masked, m.end())
            if end is not None:
                for k in range(line_of(m.start()), line_of(end) + 1):
                    test[k] = True
        total += test.count(False)
        for k, line in enumerate(lines):
            m = FN.match(line)
            end = None if test[k] or not m else block_end(masked, starts[k] + m.end())
            if end is not None:
                longest = max(longest, (line_of(end) - k + 1, f"{f.relative_to(ROOT)}:{k + 1}", m.group(5)))
    return total, longest


def expand(path):
    """`a::{b, c::d}` -> ["a::b", "a::c::d"], one level of braces deep is enough here."""
    m = re.match(r"^(.*?)::\{(.*)\}$", path.strip())
    if not m:
        return [path.strip()]
    head, inner = m.groups()
    items, depth, cur = [], 0, ""
    for ch in inner:
        if ch == "," and depth == 0:
            items.append(cur)
            cur = ""
            continue
        depth += ch == "{"
        depth -= ch == "}"
        cur += ch
    items.append(cur)
    out = []
    for item in items:
        if item.strip():
            out += expand(f"{head}::{item.strip()}")
    return out


def main():
    files = sorted(SRC.rglob("*.rs"))
    modules = {module_of(f) for f in files}
    edges = {m: set() for m in modules}
    for f in files:
        me = module_of(f)
        text = "\n".join(code_lines(f.read_text()))
        paths = []
        for use in re.findall(r"\buse\s+([^;]+);", text):
            paths += expand(re.sub(r"\s+", " ", use))
        paths += re.findall(r"\bcrate(?:::\w+)+", text)
        for path in paths:
            parts = [p.strip() for p in path.split("::")]
            if parts[0] == "crate":
                base, rest = (), parts[1:]
            elif parts[0] == "super":
                base = me[:-1] if f.name != "mod.rs" else me[:-1]
                rest = parts[1:]
                while rest and rest[0] == "super":
                    base, rest = base[:-1], rest[1:]
            elif parts[0] == "self":
                base, rest = me, parts[1:]
            else:
                continue
            target = base
            for p in rest:
                if base + (p,) in modules or target + (p,) in modules:
                    target = target + (p,)
                else:
                    break
            if target != me and target[: len(me)] != me and me[: len(target)] != target:
                edges[me].add(target)
    # Tarjan's strongly connected components.
    index, low, on, stack, comps, n = {}, {}, set(), [], [], [0]

    def visit(v):
        index[v] = low[v] = n[0]
        n[0] += 1
        stack.append(v)
        on.add(v)
        for w in edges.get(v, ()):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            comps.append(comp)

    sys.setrecursionlimit(10000)
    for v in sorted(modules):
        if v not in index:
            visit(v)
    circles = [sorted("::".join(m) or "crate" for m in c) for c in comps if len(c) > 1]
    for c in circles:
        print("circle: " + " <-> ".join(c), file=sys.stderr)
    http_lines = sum(len(f.read_text().splitlines()) for f in (SRC / "http").rglob("*.rs"))
    unsafe_blocks = sum(len(re.findall(r"\bunsafe\s*\{", "\n".join(code_lines(f.read_text())))) for f in files)
    print(f"src_http_lines {http_lines} lines")
    print(f"unsafe_blocks {unsafe_blocks} blocks")
    print(f"import_circles {len(circles)} circles")
    non_test, (fn_lines, fn_at, fn_name) = shape(files)
    print(f"src_lines_non_test {non_test} lines")
    print(f"longest_fn_lines {fn_lines} lines")
    print(f"longest_fn: {fn_name} at {fn_at}", file=sys.stderr)


main()
