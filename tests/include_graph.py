#!/usr/bin/env python3
"""The daemon's include graph: no circle between its modules, nothing from client/.

A module is a .c file with its .h (store.c + store.h is "store"). Module A
depends on module B when A's .c or .h includes B's .h. The graph must be a
DAG, and neither daemon/ nor proto/ may include a header that lives in
client/. Exit 0 when both hold; else print what breaks them and exit 1.
Usage: include_graph.py SOURCE_DIR
"""
import os
import re
import sys

INCLUDE = re.compile(r'^\s*#\s*include\s+"([^"]+)"', re.M)


def modules(root, dirs):
    mods = {}
    for d in dirs:
        for name in os.listdir(os.path.join(root, d)):
            base, ext = os.path.splitext(name)
            if ext in (".c", ".h"):
                mods.setdefault(base, []).append(os.path.join(root, d, name))
    return mods


def main(root):
    client_headers = {n for n in os.listdir(os.path.join(root, "client"))
                      if n.endswith(".h")} | set(os.listdir(os.path.join(root, "client", "include")))
    dirs = ["daemon", "proto", os.path.join("proto", "include")]
    mods = modules(root, dirs)
    problems = []
    graph = {m: set() for m in mods}
    for m, files in mods.items():
        for f in files:
            with open(f, encoding="utf-8") as fh:
                for inc in INCLUDE.findall(fh.read()):
                    base = os.path.splitext(os.path.basename(inc))[0]
                    if base in mods and base != m:
                        graph[m].add(base)
                    elif base not in mods and inc in client_headers:
                        problems.append("%s includes %s from client/" % (os.path.relpath(f, root), inc))
    # Cycles: depth-first search with colours.
    colour, stack = {}, []

    def visit(m):
        colour[m] = 1
        stack.append(m)
        for n in sorted(graph[m]):
            if colour.get(n) == 1:
                problems.append("circle: " + " -> ".join(stack[stack.index(n):] + [n]))
            elif n not in colour:
                visit(n)
        stack.pop()
        colour[m] = 2

    for m in sorted(graph):
        if m not in colour:
            visit(m)
    for p in problems:
        print(p)
    print("%d modules, %d dependencies, %d problems" % (len(graph), sum(map(len, graph.values())),
                                                        len(problems)))
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1] if len(sys.argv) > 1 else os.path.join(os.path.dirname(__file__), "..")))
