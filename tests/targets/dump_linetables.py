"""Prints, as JSON, every code object of a few standard-library modules with
its raw 3.11 location table and CPython's own answer (co_lines), for the
line-table decoding test. Run by /usr/bin/python3.11."""
import json
import sys
import types

MODULES = ["threading", "asyncio.base_events", "json.decoder", "subprocess", "argparse"]


def walk(code):
    yield code
    for const in code.co_consts:
        if isinstance(const, types.CodeType):
            yield from walk(const)


out = []
for name in MODULES:
    module = __import__(name, fromlist=["_"])
    with open(module.__file__, encoding="utf-8") as f:
        top = compile(f.read(), module.__file__, "exec")
    for code in walk(top):
        out.append({
            "name": code.co_qualname,
            "firstlineno": code.co_firstlineno,
            "linetable": code.co_linetable.hex(),
            "units": len(code.co_code) // 2,
            "lines": [[s // 2, e // 2, -1 if l is None else l] for s, e, l in code.co_lines()],
        })
json.dump(out, sys.stdout)
