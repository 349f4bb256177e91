#!/usr/bin/env python3
"""Prints figures about the source tree, one `<name> <value> <unit>` line each:

  src_http_lines <n> lines    every line of src/http/**/*.rs (the HTTP layer, its tests included)
  unsafe_blocks <n> blocks    `unsafe {` blocks in src/
  import_circles <n> circles  groups of modules that import one another in a loop

A module is a file (`mod.rs` stands for its directory). Module A imports B when A names a path
into B (`use crate::b::...`, `super::b::...`, or a `crate::b::...` path in code). A module and
its own ancestors are left out of each other's imports: a parent declares its children, and a
child using its parent's private items is how Rust scopes them. Each strongly connected group
of two or more modules is one circle.

Usage: code_figures.py [ROOT]   (ROOT defaults to the repository holding this script)
"""
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


main()
