#!/usr/bin/env python3
"""No call loop between the modules of client-lib/src and client-lib/mdns (issue 10).

Reads `nm` of the library's static archive: each member src_<module>.c.o
(client-lib/src) or mdns_<module>.c.o (client-lib/mdns) is a module; module
A uses module B when A has an undefined symbol that B defines. Fails (exit 1)
on any cycle in that graph, naming the modules and symbols, and when the
archive lacks the src_ or the mdns_ modules (nothing checked is no pass).

usage: check_layering.py libpos-p2p.a [nm]
"""
import re
import shutil
import subprocess
import sys

MEMBER = re.compile(r"^(?:.*\()?((?:src|mdns)_\w+)\.c\.o\)?:$")


def read_modules(archive, nm):
    out = subprocess.run([nm, archive], check=True, capture_output=True, text=True).stdout
    defined, undefined, module = {}, {}, None
    for line in out.splitlines():
        line = line.rstrip()
        if not line:
            continue
        if line.endswith(":"):
            m = MEMBER.match(line)
            module = m.group(1) if m else None
            if module:
                defined.setdefault(module, set())
                undefined.setdefault(module, set())
            continue
        if module is None:
            continue
        parts = line.split()
        kind, name = parts[-2], parts[-1]
        if kind == "U":
            undefined[module].add(name)
        elif kind.isupper():  # global text, data, bss, read-only
            defined[module].add(name)
    return defined, undefined


def graph(defined, undefined):
    owner = {}
    for mod, syms in defined.items():
        for s in syms:
            owner[s] = mod
    edges = {m: {} for m in defined}
    for mod, syms in undefined.items():
        for s in syms:
            dst = owner.get(s)
            if dst and dst != mod:
                edges[mod].setdefault(dst, []).append(s)
    return edges


def find_cycle(edges):
    """A cycle as a list of modules [a, b, ..., a], or None."""
    state, stack = {}, []

    def visit(m):
        state[m] = 1
        stack.append(m)
        for n in sorted(edges[m]):
            if state.get(n) == 1:
                return stack[stack.index(n):] + [n]
            if n not in state:
                c = visit(n)
                if c:
                    return c
        stack.pop()
        state[m] = 2
        return None

    for m in sorted(edges):
        if m not in state:
            c = visit(m)
            if c:
                return c
    return None


def main():
    if len(sys.argv) < 2:
        print(__doc__.strip().splitlines()[-1], file=sys.stderr)
        return 2
    nm = sys.argv[2] if len(sys.argv) > 2 else shutil.which("nm")
    if not nm:
        print("check_layering: nm not found (binutils)", file=sys.stderr)
        return 2
    defined, undefined = read_modules(sys.argv[1], nm)
    for prefix in ("src_", "mdns_"):
        if not any(m.startswith(prefix) for m in defined):
            print("check_layering: no %s*.c.o member in %s" % (prefix, sys.argv[1]),
                  file=sys.stderr)
            return 1
    edges = graph(defined, undefined)
    for m in sorted(edges):
        print("%s -> %s" % (m, ", ".join(sorted(edges[m])) or "(nothing)"))
    cycle = find_cycle(edges)
    if cycle:
        print("call loop between modules: " + " -> ".join(cycle), file=sys.stderr)
        for a, b in zip(cycle, cycle[1:]):
            print("  %s calls %s: %s" % (a, b, ", ".join(sorted(edges[a][b])[:6])),
                  file=sys.stderr)
        return 1
    print("no call loop among %d modules" % len(edges))
    return 0


if __name__ == "__main__":
    sys.exit(main())
