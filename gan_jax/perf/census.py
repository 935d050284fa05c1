"""What a compiled program launches, read from its HLO before it runs: the work items
(kernels, on a GPU) outside and inside its loops, by kind and by part of the GAN, with the
bytes and convolution FLOPs of each (``hlo_cost``), and tables of them: the census, the
roofline floor per step, the kernels with the longest floors.
"""
import collections
import re

from gan_jax.perf import hlo, hlo_cost

# Instructions that launch no work of their own on a GPU.
_NO_KERNEL = hlo.CONTAINERS | {"parameter", "get-tuple-element", "tuple", "bitcast", "constant",
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


def take(hlo_text: str) -> dict:
    """The work items a compiled program launches (fusions, convolutions, library calls):
    outside any loop ("per_call") and per trip of each loop, by kind and by part of the
    GAN, with the bytes and convolution FLOPs of each (``hlo_cost``). On a GPU each is one
    kernel (or a few, for a library call), so at small batch their number bounds the step
    time from below, and at large batch their bytes and FLOPs do."""
    comps, entry = hlo.computations(hlo_text)
    ops = hlo.instructions(comps)
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
TABLE_KINDS = ("convolution", "matmul", "reduction fusion", "elementwise fusion",
               "copy/transpose")


def step_of(kernels: dict) -> dict:
    """One step's kernels: the K-step loop's body, the loop that launches the most kernels
    per trip (others draw the data's indices), or with K=1 (no loop) the whole program."""
    return max([*kernels["loops"], kernels["per_call"]], key=lambda part: part["total"])


def _outside_step(kernels: dict, step: dict) -> list[dict]:
    """The census parts other than ``step``: once per dispatch, not per step."""
    return [x for x in (*kernels["loops"], kernels["per_call"]) if x is not step]


def table(rows: list[dict]) -> str:
    """``benchmark.compile_only`` rows as a Markdown table of one step's kernels by kind."""
    head = ["batch", "dtype", "K", "ablation", "compile s", "mem GiB", "kernels/step",
            *TABLE_KINDS, "other", "outside the step loop"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in rows:
        loop = step_of(r["kernels"])
        kinds = loop["kinds"]
        other = loop["total"] - sum(kinds.get(k, 0) for k in TABLE_KINDS)
        outside = sum(x["total"] for x in _outside_step(r["kernels"], loop))
        mem = r["memory_bytes"]
        lines.append("| " + " | ".join(map(str, [
            r["batch"], r["dtype"], r["steps_per_dispatch"], " ".join(r["ablation"]) or "-",
            f"{r['compile_s']:.0f}", f"{mem / 2 ** 30:.2f}" if mem else "-", loop["total"],
            *(kinds.get(k, 0) for k in TABLE_KINDS), other, outside])) + " |")
    return "\n".join(lines)


def parts_table(row: dict) -> str:
    """One ``compile_only`` row's step kernels (and their bytes) by part of the GAN, as a
    Markdown table."""
    step = step_of(row["kernels"])
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
        loop = step_of(r["kernels"])
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
    step = step_of(row["kernels"])
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
