"""What each kernel of a compiled HLO module moves and computes, from its shapes alone: the
bytes of its operands and results, and for a cuDNN convolution its FLOPs. With a GPU's
memory bandwidth and matmul peak these give each kernel's roofline floor, so a program
compiled for a GPU this machine lacks (``targets``) can be costed without it.
"""
import math
import re

_DTYPE_BYTES = {"pred": 1, "s8": 1, "u8": 1, "f8e4m3fn": 1, "f8e5m2": 1, "bf16": 2,
                "f16": 2, "s16": 2, "u16": 2, "s32": 4, "u32": 4, "f32": 4, "s64": 8,
                "u64": 8, "f64": 8, "c64": 8, "c128": 16}
_ARRAY = re.compile(r"\b([a-z]+[0-9a-z]*)\[([\d,]*)\]")
# Ops that read only part of an operand: inside a fusion, they read what they return.
_SLICERS = {"slice", "dynamic-slice", "gather"}


def _dims(dims: str) -> list[int]:
    return [int(d) for d in dims.split(",") if d]


def nbytes(shape_text: str) -> int:
    """Bytes of every array in an HLO shape, e.g. "(bf16[8,4]{1,0}, u8[0]{0})" -> 64."""
    return sum(_DTYPE_BYTES[t] * math.prod(_dims(d))
               for t, d in _ARRAY.findall(shape_text) if t in _DTYPE_BYTES)


def _arrays(shape_text: str) -> list[list[int]]:
    return [_dims(d) for t, d in _ARRAY.findall(shape_text) if t in _DTYPE_BYTES]


def operands(opcode: str, rest: str) -> list[str]:
    """The names an instruction reads, in order (``rest``: its text after " = ")."""
    start = (" " + rest).find(f" {opcode}(") + len(opcode) + 1
    depth, end = 1, start
    while depth and end < len(rest):
        depth += {"(": 1, ")": -1}.get(rest[end], 0)
        end += 1
    return re.findall(r"%([\w.\-]+)", rest[start:end - 1])


def _sliced_params(comp: list[tuple]) -> dict[int, int]:
    """A fused computation's parameters read only through slices: index -> bytes read."""
    index = {n: int(re.search(r"parameter\((\d+)\)", r).group(1))
             for n, op, r in comp if op == "parameter"}
    users = {n: [] for n in index}
    for n, op, r in comp:
        for i, a in enumerate(operands(op, r)):
            if a in users:
                users[a].append((op, i, r))
    return {index[p]: sum(nbytes(r.split(f" {op}(", 1)[0]) for op, _, r in us)
            for p, us in users.items()
            if us and all(op in _SLICERS and i == 0 for op, i, _ in us)}


def _conv_flops(rest: str, shapes: dict, args: list[str]) -> float:
    target = re.search(r'custom_call_target="([^"]*conv[^"]*)"', rest, re.IGNORECASE)
    window = re.search(r"window=\{size=([\dx]+)", rest)
    labels = re.search(r"dim_labels=(\w+)_(\w+)->(\w+)", rest)
    if not (target and window and labels) or len(args) < 2:
        return 0.0
    taps = math.prod(int(s) for s in window.group(1).split("x"))
    lhs_f = labels.group(1).index("f")
    result = _arrays(rest.split(" custom-call(", 1)[0])[0]
    a, b = (_arrays(shapes.get(x, ""))[:1] or [[]] for x in args[:2])
    a, b = a[0], b[0]
    if not (a and b):
        return 0.0
    # Each is the FLOPs of the forward convolution it is a gradient of.
    if target.group(1).endswith("BackwardInput"):  # (dy, filter) -> dx
        return 2.0 * math.prod(a) * taps * result[lhs_f]
    if target.group(1).endswith("BackwardFilter"):  # (x, dy) -> dfilter
        return 2.0 * math.prod(b) * taps * a[lhs_f]
    return 2.0 * math.prod(result) * taps * a[lhs_f]  # (x, filter) -> y


def kernel_cost(opcode: str, rest: str, comps: dict, shapes: dict) -> tuple[int, float]:
    """(bytes read and written, convolution FLOPs) of one kernel; ``shapes``: every
    instruction's result shape by name; ``comps``: computations by name."""
    args = operands(opcode, rest)
    callee = re.search(r"calls=%?([\w.\-]+)", rest) if opcode == "fusion" else None
    sliced = _sliced_params(comps.get(callee.group(1), [])) if callee else {}
    read = sum(sliced.get(i, nbytes(shapes.get(a, ""))) for i, a in enumerate(args))
    written = nbytes(rest.split(f" {opcode}(", 1)[0])
    return read + written, _conv_flops(rest, shapes, args) if opcode == "custom-call" else 0.0


def floor_s(costs, bandwidth: float, peak_flops: float) -> float:
    """Seconds the kernels need at least: each one its bytes at ``bandwidth`` (bytes/s) or
    its FLOPs at ``peak_flops``, whichever is longer; launch gaps not counted."""
    return sum(max(b / bandwidth, f / peak_flops) for b, f in costs)
