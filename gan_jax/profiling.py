"""Where a compiled program's time goes: a ``jax.profiler`` trace of some calls, summed per
HLO instruction and per kind of work (convolution, matmul, fusions, layout copies), set
against the wall time of the same calls.

The trace gives each device op's time and its HLO instruction name; the compiled program's
HLO text says what each instruction is (a fusion is the kind of its heaviest content), and
its metadata names the JAX operation it came from.
"""
import collections
import glob
import itertools
import os
import re
import time

import jax

from gan_jax import hlo_cost

_HEADER = re.compile(r"^(?:ENTRY )?%?([\w.\-]+) .*\{\s*$")
_INSTR = re.compile(r"^\s+(?:ROOT )?%?([\w.\-]+) = (.*)$")
_OPCODE = re.compile(r"\s([a-z][\w\-]*)\(")
# Instructions that only hold others (their events would count their contents twice) or
# that never run as work of their own.
_CONTAINERS = {"while", "conditional", "call", "async-start", "async-done"}
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


def _computations(hlo_text: str) -> tuple[dict[str, list[tuple]], str | None]:
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


def hlo_ops(hlo_text: str) -> dict[str, dict]:
    """Every instruction of an HLO module: name -> {"opcode", "kind", "source", "shape"}."""
    return _ops(_computations(hlo_text)[0])


def _ops(comps: dict[str, list[tuple]]) -> dict[str, dict]:
    def inner(rest):
        found = set()
        for callee in re.findall(r"calls=%?([\w.\-]+)", rest):
            found |= {opcode for _, opcode, _ in comps.get(callee, ())}
        return found

    out = {}
    for name, opcode, rest in itertools.chain.from_iterable(comps.values()):
        src = re.search(r'op_name="([^"]*)"', rest)
        kind = ("control" if opcode in _CONTAINERS
                else _kind_of(opcode, rest, inner(rest) if opcode == "fusion" else set()))
        out[name] = {"opcode": opcode, "kind": kind, "source": src.group(1) if src else "",
                     "shape": rest.split(f" {opcode}(", 1)[0] if opcode else ""}
    return out


# Instructions that launch no work of their own on a GPU.
_NO_KERNEL = _CONTAINERS | {"parameter", "get-tuple-element", "tuple", "bitcast", "constant",
                            "copy-done", "partition-id", "replica-id", "after-all"}


def _part(source: str) -> str:
    model = next((m for m in ("Generator", "Discriminator") if f"{m})" in source), None)
    if model is None:
        return "other (optimizers, norms, EMA, data, noise)"
    part = f"{model} {'backward' if 'transpose(' in source else 'forward'}"
    return part + (" BatchNorm" if "BatchNorm" in source else "")


def _short(source: str) -> str:
    """A JAX op's name without the wrappers every op of a step has, cut to 80 characters."""
    return re.sub(r"^jit\([^)]*\)/(while/body/)?(eval_jaxpr/)?", "", source)[-80:]


def kernel_census(hlo_text: str) -> dict:
    """The work items a compiled program launches (fusions, convolutions, library calls):
    outside any loop ("per_call") and per trip of each loop, by kind and by part of the
    GAN, with the bytes and convolution FLOPs of each (``hlo_cost``). On a GPU each is one
    kernel (or a few, for a library call), so at small batch their number bounds the step
    time from below, and at large batch their bytes and FLOPs do."""
    comps, entry = _computations(hlo_text)
    ops = _ops(comps)
    shapes = {n: op["shape"] for n, op in ops.items()}

    def census(comp):
        work = [(n, o, r) for n, o, r in comps.get(comp, ()) if o not in _NO_KERNEL]
        costs = [list(hlo_cost.kernel_cost(o, r, comps, shapes)) for _, o, r in work]
        parts = [_part(ops[n]["source"]) for n, _, _ in work]
        part_bytes = collections.Counter()
        for part, (b, _) in zip(parts, costs):
            part_bytes[part] += b
        return {"total": len(work),
                "kinds": dict(collections.Counter(ops[n]["kind"] for n, _, _ in work)),
                "parts": dict(collections.Counter(parts)),
                "bytes": sum(b for b, _ in costs), "conv_flops": sum(f for _, f in costs),
                "part_bytes": dict(part_bytes), "costs": costs,
                # Aligned with costs: name, kind and (the end of) the JAX op of each kernel.
                "work": [[n, ops[n]["kind"], _short(ops[n]["source"])] for n, _, _ in work]}

    out = {"per_call": census(entry), "loops": []}
    todo = [entry]
    while todo:
        for name, opcode, rest in comps.get(todo.pop(), ()):
            body = re.search(r"body=%?([\w.\-]+)", rest) if opcode == "while" else None
            if body:
                cond = re.search(r"condition=%?([\w.\-]+)", rest).group(1)
                trip = census(body.group(1))
                trip["condition"] = census(cond)["total"]
                out["loops"].append({"while": name, "source": ops[name]["source"], **trip})
                todo.append(body.group(1))
    return out


# The kinds a census table has a column for (the rest count as "other").
CENSUS_KINDS = ("convolution", "matmul", "reduction fusion", "elementwise fusion",
                "copy/transpose")


def census_step(kernels: dict) -> dict:
    """One step's kernels: the K-step loop's body, the loop that launches the most kernels
    per trip (others draw the data's indices), or with K=1 (no loop) the whole program."""
    return max([*kernels["loops"], kernels["per_call"]], key=lambda part: part["total"])


def _outside_step(kernels: dict, step: dict) -> list[dict]:
    """The census parts other than ``step``: once per dispatch, not per step."""
    return [x for x in (*kernels["loops"], kernels["per_call"]) if x is not step]


def census_table(rows: list[dict]) -> str:
    """``benchmark.compile_only`` rows as a Markdown table of one step's kernels by kind."""
    head = ["batch", "dtype", "K", "ablation", "compile s", "mem GiB", "kernels/step",
            *CENSUS_KINDS, "other", "outside the step loop"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in rows:
        loop = census_step(r["kernels"])
        kinds = loop["kinds"]
        other = loop["total"] - sum(kinds.get(k, 0) for k in CENSUS_KINDS)
        outside = sum(x["total"] for x in _outside_step(r["kernels"], loop))
        mem = r["memory_bytes"]
        lines.append("| " + " | ".join(map(str, [
            r["batch"], r["dtype"], r["steps_per_dispatch"], " ".join(r["ablation"]) or "-",
            f"{r['compile_s']:.0f}", f"{mem / 2 ** 30:.2f}" if mem else "-", loop["total"],
            *(kinds.get(k, 0) for k in CENSUS_KINDS), other, outside])) + " |")
    return "\n".join(lines)


def census_parts(row: dict) -> str:
    """One ``compile_only`` row's step kernels (and their bytes) by part of the GAN, as a
    Markdown table."""
    step = census_step(row["kernels"])
    lines = ["| part of the step | kernels | MB moved |", "|---|---|---|"]
    lines += [f"| {p} | {n} | {step['part_bytes'].get(p, 0) / 1e6:.0f} |"
              for p, n in sorted(step["parts"].items(), key=lambda x: -x[1])]
    return "\n".join(lines)


def roofline_table(rows: list[dict], bandwidth: float, peak_flops: float) -> str:
    """Step floors of rows with a ``kernels`` census (``compile_only``'s, or timed ones,
    then set against the measured step): each kernel its bytes at ``bandwidth`` or its
    convolution FLOPs at ``peak_flops``, whichever is longer, the work outside the step
    loop shared by the K steps; launch gaps, matmul FLOPs and caches not counted."""
    measured = any("ms_per_step" in r for r in rows)
    head = ["batch", "K", "ablation", "kernels/step", "GB/step", "conv GFLOP/step",
            "floor ms/step", "img/s at the floor"] + (
            ["measured ms/step", "floor / measured"] if measured else [])
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in rows:
        loop = census_step(r["kernels"])
        rest = _outside_step(r["kernels"], loop)
        k = r["steps_per_dispatch"] if loop is not r["kernels"]["per_call"] else 1
        per_step = lambda key: loop[key] + sum(x[key] for x in rest) / k
        floor = hlo_cost.floor_s(loop["costs"], bandwidth, peak_flops) + sum(
            hlo_cost.floor_s(x["costs"], bandwidth, peak_flops) for x in rest) / k
        lines.append("| " + " | ".join(map(str, [
            r["batch"], r["steps_per_dispatch"], " ".join(r["ablation"]) or "-", loop["total"],
            f"{per_step('bytes') / 1e9:.2f}", f"{per_step('conv_flops') / 1e9:.0f}",
            f"{floor * 1e3:.2f}", f"{r['batch'] / floor:,.0f}",
            *([f"{r['ms_per_step']:.2f}", f"{floor * 1e3 / r['ms_per_step']:.0%}"]
              if measured else [])])) + " |")
    return "\n".join(lines)


def top_kernels_table(row: dict, bandwidth: float, peak_flops: float, n: int = 20) -> str:
    """The ``n`` kernels of one step (of a row with a ``kernels`` census) with the longest
    roofline floors, as a Markdown table: what a change must shrink to move the floor."""
    step = census_step(row["kernels"])
    floors = [(hlo_cost.floor_s([c], bandwidth, peak_flops), w, c)
              for w, c in zip(step["work"], step["costs"])]
    total = sum(f for f, _, _ in floors)
    by_kind = collections.Counter()
    for f, (_, kind, _), _ in floors:
        by_kind[kind] += f
    lines = ["The step's floor by kind: " + ", ".join(
                 f"{k} {f * 1e3:.2f} ms ({f / total:.0%})" for k, f in by_kind.most_common()),
             "", "| kernel | kind | MB | GFLOP | floor us | share of the step's floor | from |",
             "|---|---|---|---|---|---|---|"]
    for f, (name, kind, src), (b, fl) in sorted(floors, key=lambda x: -x[0])[:n]:
        lines.append(f"| {name} | {kind} | {b / 1e6:.1f} | {fl / 1e9:.1f} | {f * 1e6:.1f} | "
                     f"{f / total:.1%} | {src[-70:]} |")
    return "\n".join(lines)


def capture(run, logdir: str) -> tuple[str, float]:
    """Runs ``run()`` (which must wait for its results) under the profiler; returns the
    trace file and the wall time of ``run``."""
    jax.profiler.start_trace(logdir)
    try:
        t = time.perf_counter()
        run()
        wall = time.perf_counter() - t
    finally:
        jax.profiler.stop_trace()
    files = sorted(glob.glob(os.path.join(logdir, "**", "*.xplane.pb"), recursive=True),
                   key=os.path.getmtime)
    if not files:
        raise RuntimeError(f"jax.profiler wrote no .xplane.pb under {logdir}.")
    return files[-1], wall


def _op_lines(plane):
    """The lines of a plane whose events are HLO ops, without derived duplicates."""
    # Every event is looked at: a CPU thread can run its first op after many threadpool
    # events (a sniff of the first 50 missed calls and made the test flaky).
    lines = [ln for ln in plane.lines if any(dict(e.stats).get("hlo_op") for e in ln.events)]
    derived = [ln for ln in lines if ln.name == "XLA Ops"]
    return derived or [ln for ln in lines if ln.name not in ("XLA Modules", "Steps")]


def op_times(xplane_path: str, module: str | None = None) -> tuple[dict, float]:
    """Per HLO op name: [total ns, count] on the first device that ran ops (or the host on
    CPU), and the ns during which any op ran (overlaps counted once). ``module``: keep only
    events of the HLO module of that name, if any event names it (module names differ
    between backends; otherwise every op counts)."""
    from jax.profiler import ProfileData
    data = ProfileData.from_file(xplane_path)
    planes = [p for p in data.planes if p.name.startswith("/device:")]
    planes = planes or [p for p in data.planes if p.name.startswith("/host:CPU")]
    for plane in planes:
        events = []  # (op, module, start ns, duration ns)
        for line in _op_lines(plane):
            for e in line.events:
                stats = dict(e.stats)
                if stats.get("hlo_op"):
                    events.append((stats["hlo_op"], stats.get("hlo_module"), e.start_ns,
                                   e.duration_ns))
        if module and any(m == module for _, m, _, _ in events):
            events = [ev for ev in events if ev[1] == module]
        if events:
            totals = collections.defaultdict(lambda: [0.0, 0])
            for op, _, _, ns in events:
                totals[op][0] += ns
                totals[op][1] += 1
            return dict(totals), _union_ns((s, s + ns) for _, _, s, ns in events)
    return {}, 0.0


def _union_ns(spans) -> float:
    busy, end = 0.0, float("-inf")
    for s, e in sorted(spans):
        if e > end:
            busy += e - max(s, end)
            end = e
    return busy


def summarize(xplane_path: str, hlo_text: str, *, steps: int, wall_s: float,
              top: int = 12) -> dict:
    """Time per step by kind of work and for the ``top`` heaviest ops, in ms, and the share
    of the wall time during which the device ran any op; with each op's bytes and
    convolution FLOPs per call (``hlo_cost``), from which ``table`` gives the rates they
    ran at."""
    comps, _ = _computations(hlo_text)
    ops = _ops(comps)
    instr = {n: (o, r) for n, o, r in itertools.chain.from_iterable(comps.values())}
    shapes = {n: op["shape"] for n, op in ops.items()}
    module = re.match(r"HloModule ([\w.\-]+)", hlo_text)
    times, busy_ns = op_times(xplane_path, module.group(1) if module else None)
    by_kind = collections.Counter()
    kind_costs = collections.defaultdict(list)  # kind -> [(bytes, flops, calls)]
    rows = []
    for name, (ns, count) in times.items():
        info = ops.get(name, {"opcode": "?", "kind": "other", "source": "", "shape": ""})
        if info["kind"] == "control":
            continue
        b, f = hlo_cost.kernel_cost(*instr[name], comps, shapes) if name in instr else (0, 0.0)
        by_kind[info["kind"]] += ns
        kind_costs[info["kind"]].append((b, f, count / steps))
        rows.append({"op": name, "kind": info["kind"], "ms_per_step": ns / 1e6 / steps,
                     "calls_per_step": count / steps, "bytes_per_call": b,
                     "flops_per_call": f, "shape": info["shape"], "source": info["source"]})
    total = sum(by_kind.values())
    rows.sort(key=lambda r: -r["ms_per_step"])
    wall_ms = 1e3 * wall_s / steps
    return {"steps": steps, "wall_ms_per_step": wall_ms,
            "op_ms_per_step": total / 1e6 / steps, "busy_ms_per_step": busy_ns / 1e6 / steps,
            "busy_fraction": busy_ns / 1e9 / wall_s if wall_s else None,
            "kinds": [{"kind": k, "ms_per_step": by_kind[k] / 1e6 / steps,
                       "share": by_kind[k] / total if total else 0.0,
                       "bytes_per_step": sum(b * c for b, _, c in kind_costs[k]),
                       "flops_per_step": sum(f * c for _, f, c in kind_costs[k]),
                       "floor_costs": kind_costs[k]}
                      for k in KINDS if by_kind[k]],
            "top": rows[:top]}


def _num(x: float) -> str:
    return f"{x:,.0f}" if x >= 100 else f"{x:.3g}"


def _rates(ms: float, nbytes: float, flops: float, floor_s: float | None) -> list[str]:
    """GB/s and TFLOP/s achieved, and the share of the roofline floor, as table cells."""
    s = ms / 1e3
    return ([_num(nbytes / s / 1e9) if s else "-", _num(flops / s / 1e12) if s and flops else "-"]
            + ([f"{floor_s / s:.0%}" if s else "-"] if floor_s is not None else []))


def table(summary: dict, bandwidth: float | None = None,
          peak_flops: float | None = None) -> str:
    """The summary as two Markdown tables: kinds of work, then the heaviest ops, each with
    the GB/s and convolution TFLOP/s it ran at; given the device's ``bandwidth`` and
    ``peak_flops``, also its roofline floor's share of its time (100%: at the roofline)."""
    s = summary
    floors = bandwidth is not None and peak_flops is not None

    def floor(costs):  # costs: [(bytes, flops, calls per step)]
        if not floors:
            return None
        return sum(c * hlo_cost.floor_s([(b, f)], bandwidth, peak_flops) for b, f, c in costs)

    extra = ["GB/s", "TFLOP/s"] + (["of its floor"] if floors else [])
    lines = [f"wall {s['wall_ms_per_step']:.3f} ms/step; ops {s['op_ms_per_step']:.3f} ms/step; "
             f"device busy {s['busy_ms_per_step']:.3f} ms/step"
             + (f" ({s['busy_fraction']:.0%} of the wall time)" if s["busy_fraction"] else ""),
             "", "| kind | ms/step | share | " + " | ".join(extra) + " |",
             "|---|---|---|" + "---|" * len(extra)]
    for k in s["kinds"]:
        lines.append(f"| {k['kind']} | {k['ms_per_step']:.3f} | {k['share']:.1%} | " + " | ".join(
            _rates(k["ms_per_step"], k["bytes_per_step"], k["flops_per_step"],
                   floor(k["floor_costs"]))) + " |")
    lines += ["", "| op | kind | ms/step | calls/step | " + " | ".join(extra)
              + " | output | from |", "|---|---|---|---|" + "---|" * (len(extra) + 2)]
    for r in s["top"]:
        src = r["source"].split("/", 1)[-1][-70:]
        shape = re.sub(r"\{[^}]*\}", "", r["shape"])[:40]  # Layouts dropped: too long.
        c = r["calls_per_step"]
        rates = _rates(r["ms_per_step"], r["bytes_per_call"] * c, r["flops_per_call"] * c,
                       floor([(r["bytes_per_call"], r["flops_per_call"], c)]))
        lines.append(f"| {r['op']} | {r['kind']} | {r['ms_per_step']:.3f} | {c:g} | "
                     + " | ".join(rates) + f" | {shape} | {src} |")
    return "\n".join(lines)
