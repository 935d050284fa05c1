"""An optimized HLO module's text, read: its computations and instructions, and for each
instruction the kind of work it is (a fusion is the kind of its heaviest content), the JAX
operation its metadata names, and its result shape. Shared by ``census`` (programs read
before they run) and ``profiling`` (traces of them running).
"""
import itertools
import re

_HEADER = re.compile(r"^(?:ENTRY )?%?([\w.\-]+) .*\{\s*$")
_INSTR = re.compile(r"^\s+(?:ROOT )?%?([\w.\-]+) = (.*)$")
_OPCODE = re.compile(r"\s([a-z][\w\-]*)\(")
# Instructions that only hold others (their events would count their contents twice) or
# that never run as work of their own.
CONTAINERS = {"while", "conditional", "call", "async-start", "async-done"}
KINDS = ("convolution", "matmul", "reduction fusion", "elementwise fusion",
         "copy/transpose", "collective", "random bits", "other")


def _kind_of(opcode: str, rest: str, inner: set[str]) -> str:
    ops = {opcode} | inner
    if opcode == "custom-call":
        target = re.search(r'custom_call_target="([^"]*)"', rest)
        target = target.group(1).lower() if target else ""
        if "conv" in target:
            return "convolution"
        if any(t in target for t in ("gemm", "matmul", "dot")):
            return "matmul"
    if "convolution" in ops:
        return "convolution"
    if "dot" in ops or "triton_gemm" in rest:
        return "matmul"
    if ops & {"all-reduce", "all-gather", "reduce-scatter", "all-to-all",
              "collective-permute", "all-reduce-start", "all-gather-start"}:
        return "collective"
    if opcode == "fusion":
        if ops & {"reduce", "reduce-window"}:
            return "reduction fusion"
        if ops - {"fusion", "parameter", "copy", "transpose", "bitcast", "constant",
                  "broadcast", "reshape"}:
            return "elementwise fusion"
        return "copy/transpose"
    if opcode in ("copy", "transpose", "copy-start", "copy-done"):
        return "copy/transpose"
    if opcode in ("rng-bit-generator", "rng"):
        return "random bits"
    if opcode in ("reduce", "reduce-window"):
        return "reduction fusion"
    return "other"


def computations(hlo_text: str) -> tuple[dict[str, list[tuple]], str | None]:
    """name -> its instructions as (name, opcode, rest of the line); and the ENTRY's name."""
    comps, current, entry = {}, None, None
    for line in hlo_text.splitlines():
        head = _HEADER.match(line)
        if head:
            current = comps.setdefault(head.group(1), [])
            entry = head.group(1) if line.startswith("ENTRY") else entry
            continue
        m = _INSTR.match(line)
        if m and current is not None:
            op = _OPCODE.search(" " + m.group(2))
            current.append((m.group(1), op.group(1) if op else "", m.group(2)))
    return comps, entry


def read(hlo_text: str) -> dict[str, dict]:
    """Every instruction of an HLO module: name -> {"opcode", "kind", "source", "shape"}."""
    return instructions(computations(hlo_text)[0])


def instructions(comps: dict[str, list[tuple]]) -> dict[str, dict]:
    def inner(rest):
        found = set()
        for callee in re.findall(r"calls=%?([\w.\-]+)", rest):
            found |= {opcode for _, opcode, _ in comps.get(callee, ())}
        return found

    out = {}
    for name, opcode, rest in itertools.chain.from_iterable(comps.values()):
        src = re.search(r'op_name="([^"]*)"', rest)
        kind = ("control" if opcode in CONTAINERS
                else _kind_of(opcode, rest, inner(rest) if opcode == "fusion" else set()))
        out[name] = {"opcode": opcode, "kind": kind, "source": src.group(1) if src else "",
                     "shape": rest.split(f" {opcode}(", 1)[0] if opcode else ""}
    return out
