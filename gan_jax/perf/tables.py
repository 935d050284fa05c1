"""The benchmark's Markdown tables: its rows, and what each ablation of the default step
buys."""


def pytorch_ratios(rows: list[dict]) -> None:
    """Sets each gan_jax row's "per_device_vs_best_pytorch": its img/s per device over the
    best PyTorch setting's (any dtype, layout or mode; one device) at the same model and
    batch, or None where ``rows`` hold no PyTorch row for them."""
    best = {}
    for r in rows:
        if r["framework"] == "pytorch":
            key = (r["model"], r["batch"])
            best[key] = max(best.get(key, 0.0), r["img_per_s"])
    for r in rows:
        if r["framework"] == "gan_jax":
            ratio = best.get((r["model"], r["batch"]))
            r["per_device_vs_best_pytorch"] = (r["img_per_s"] / (r.get("devices") or 1) / ratio
                                               if ratio else None)


def table(rows: list[dict]) -> str:
    """A Markdown table, with each gan_jax row's speed per device over the best PyTorch
    setting (``pytorch_ratios``, which it sets on the rows)."""
    pytorch_ratios(rows)
    lines = ["| framework | setting | model | batch | dtype | ms/step | img/s | TFLOP/s | MFU "
             "| compile s | mem GiB | per device vs best PyTorch | d_loss | g_loss |",
             "|" + "---|" * 14]
    for r in rows:
        ratio = r.get("per_device_vs_best_pytorch")
        mem = r.get("memory_bytes")
        n = r.get("devices") or 1
        setting = r["setting"] + (f", {n} devices" if n > 1 else "")
        lines.append(
            f"| {r['framework']} | {setting} | {r['model']} | {r['batch']} | {r['dtype']} "
            f"| {r['ms_per_step']:.2f} | {r['img_per_s']:,.0f} | {r['tflop_per_s']:.2f} | "
            + (f"{r['mfu']:.1%}" if r.get("mfu") else "-")
            + f" | {r.get('compile_s', 0):.1f} | "
            + (f"{mem / 2 ** 30:.2f}" if mem else "-") + " | "
            + (f"{ratio:.2f}x" if ratio else "-")
            + f" | {r['d_loss']:.3f} | {r['g_loss']:.3f} |")
    return "\n".join(lines)


def ablation_table(rows: list[dict]) -> str:
    """For each ablated gan_jax row, what the undone choice buys: the default step's speed
    over the ablated one at the same model, batch, dtype and K."""
    base = {(r["model"], r["batch"], r["dtype"], r["steps_per_dispatch"]): r for r in rows
            if r["framework"] == "gan_jax" and not r.get("ablation")}
    lines = ["| model | batch | dtype | K | ablation | img/s | default img/s | default is |",
             "|---|---|---|---|---|---|---|---|"]
    for r in rows:
        if r["framework"] != "gan_jax" or not r.get("ablation"):
            continue
        label = " ".join(r["ablation"])
        if r.get("combination_of"):
            label = f"fastest combination: {label}"
        b = base.get((r["model"], r["batch"], r["dtype"], r["steps_per_dispatch"]))
        lines.append(f"| {r['model']} | {r['batch']} | {r['dtype']} | {r['steps_per_dispatch']} "
                     f"| {label} | {r['img_per_s']:,.0f} | "
                     + (f"{b['img_per_s']:,.0f} | {b['img_per_s'] / r['img_per_s']:.2f}x |"
                        if b else "- | - |"))
    return "\n".join(lines)
