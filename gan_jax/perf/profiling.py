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

from gan_jax.perf import hlo, hlo_cost

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


def summarize(xplane_path: str, hlo_text: str, *, steps: int, wall_s: float) -> dict:
    """Time per step by kind of work and for every op, heaviest first ("ops", all of them:
    the benchmark's JSON is what a scarce GPU run leaves to study), in ms, and the share
    of the wall time during which the device ran any op; with each op's bytes and
    convolution FLOPs per call (``hlo_cost``), from which ``table`` gives the rates they
    ran at."""
    comps, _ = hlo.computations(hlo_text)
    ops = hlo.instructions(comps)
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
                      for k in hlo.KINDS if by_kind[k]],
            "ops": rows}


def _num(x: float) -> str:
    return f"{x:,.0f}" if x >= 100 else f"{x:.3g}"


def _rates(ms: float, nbytes: float, flops: float, floor_s: float | None) -> list[str]:
    """GB/s and TFLOP/s achieved, and the share of the roofline floor, as table cells."""
    s = ms / 1e3
    return ([_num(nbytes / s / 1e9) if s else "-", _num(flops / s / 1e12) if s and flops else "-"]
            + ([f"{floor_s / s:.0%}" if s else "-"] if floor_s is not None else []))


def table(summary: dict, bandwidth: float | None = None,
          peak_flops: float | None = None, top: int = 12) -> str:
    """The summary as two Markdown tables: kinds of work, then the ``top`` heaviest ops,
    each with the GB/s and convolution TFLOP/s it ran at; given the device's ``bandwidth`` and
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
    for r in s["ops"][:top]:
        src = r["source"].split("/", 1)[-1][-70:]
        shape = re.sub(r"\{[^}]*\}", "", r["shape"])[:40]  # Layouts dropped: too long.
        c = r["calls_per_step"]
        rates = _rates(r["ms_per_step"], r["bytes_per_call"] * c, r["flops_per_call"] * c,
                       floor([(r["bytes_per_call"], r["flops_per_call"], c)]))
        lines.append(f"| {r['op']} | {r['kind']} | {r['ms_per_step']:.3f} | {c:g} | "
                     + " | ".join(rates) + f" | {shape} | {src} |")
    return "\n".join(lines)
