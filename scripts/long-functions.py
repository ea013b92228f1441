#!/usr/bin/python3
"""Lists function bodies longer than a limit (default 80 lines) in src/ and apps/.

Usage: scripts/long-functions.py BUILD_DIR [--limit N] [--dirs src apps]
Parses each translation unit of BUILD_DIR/compile_commands.json with libclang (Debian's
python3-clang-16) and reports every function, method, constructor or lambda defined in the
named folders whose extent spans more than N lines, longest first. Exit status 1 when any does.
"""
import argparse
import json
import os
import sys

import clang.cindex as ci

ci.Config.set_library_file("/usr/lib/llvm-16/lib/libclang-16.so.1")
KINDS = {ci.CursorKind.FUNCTION_DECL, ci.CursorKind.CXX_METHOD, ci.CursorKind.CONSTRUCTOR,
         ci.CursorKind.DESTRUCTOR, ci.CursorKind.FUNCTION_TEMPLATE, ci.CursorKind.LAMBDA_EXPR,
         ci.CursorKind.CONVERSION_FUNCTION}


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("build_dir")
    ap.add_argument("--limit", type=int, default=80)
    ap.add_argument("--dirs", nargs="+", default=["src", "apps"])
    a = ap.parse_args()
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    wanted = [os.path.join(root, d) + os.sep for d in a.dirs]
    db = ci.CompilationDatabase.fromDirectory(a.build_dir)
    found = {}
    index = ci.Index.create()
    for cmd in db.getAllCompileCommands():
        path = os.path.realpath(os.path.join(cmd.directory, cmd.filename))
        if not path.endswith(".cpp") or not any(path.startswith(w) for w in wanted):
            continue
        args = [x for x in list(cmd.arguments)[1:] if x != cmd.filename and x not in ("-c",)]
        if "-o" in args:
            i = args.index("-o")
            del args[i:i + 2]
        if not os.path.exists(path):
            continue
        os.chdir(cmd.directory)
        try:
            tu = index.parse(path, args=args)
        except ci.TranslationUnitLoadError:
            print(f"cannot parse {path}", file=sys.stderr)
            continue
        stack = [tu.cursor]
        while stack:
            c = stack.pop()
            for ch in c.get_children():
                f = ch.location.file
                if f is None:
                    stack.append(ch)
                    continue
                fp = os.path.realpath(f.name)
                if not any(fp.startswith(w) for w in wanted):
                    continue
                if ch.kind in KINDS and ch.is_definition() or ch.kind == ci.CursorKind.LAMBDA_EXPR:
                    n = ch.extent.end.line - ch.extent.start.line + 1
                    if n > a.limit:
                        key = (os.path.relpath(fp, root), ch.extent.start.line)
                        found[key] = (n, ch.spelling or "<lambda>")
                stack.append(ch)
    for (f, line), (n, name) in sorted(found.items(), key=lambda kv: -kv[1][0]):
        print(f"{n:5d} lines  {f}:{line}  {name}")
    return 1 if found else 0


if __name__ == "__main__":
    sys.exit(main())
