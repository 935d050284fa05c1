"""What N runs in one program cost against N separate runs: the train step of a model, K
steps per dispatch over one batch all runs share, timed for 1 run alone and for N runs
stacked (``gan_jax.runs.vectorize``) in each form: "vmap" and "loop" around the step, K
times per dispatch; "map" around a K-step program (each run's K steps in turn, and a
diverging run kept at the dispatch's start)."""
import time

import jax
import numpy as np
import optax

from gan_jax import runs, steps
from gan_jax import state as state_lib
from gan_jax.models import dcgan, mlp

# name -> (G, D, image shape, batch): the MLP GAN of the seed text and the MNIST DCGAN
# (the README's main job's widths).
MODELS = {
    "mlp": (lambda: mlp.Generator(), lambda: mlp.Discriminator(), (28, 28, 1), 32),
    "dcgan28": (lambda: dcgan.Generator(resolution=28, width=32, channels=1),
                lambda: dcgan.Discriminator(resolution=28, width=32), (28, 28, 1), 64),
}


def _program(model: str, num_runs: int | None, form: str, k: int):
    """(jitted K-step program, its state, the shared batches [K, B, ...])."""
    make_g, make_d, shape, batch = MODELS[model]
    G, D = make_g(), make_d()
    tx = optax.adam(2e-4, b1=0.5)
    create = lambda key: state_lib.create(key, G, D, g_tx=tx, d_tx=tx, image_shape=shape)
    step = steps.make_train_step(G, D)
    x = jax.random.uniform(jax.random.PRNGKey(0), (k, batch, *shape), minval=-1, maxval=1)
    if num_runs is None:  # One plain run: the baseline.
        return jax.jit(steps.scan(step, k), donate_argnums=0), jax.jit(create)(
            jax.random.PRNGKey(0)), x
    state = jax.jit(jax.vmap(create))(jax.random.split(jax.random.PRNGKey(0), num_runs))
    if form == "map":  # Each run's K steps in turn, as a rolled loop: see runs.FORMS.
        multi = runs.vectorize(steps.scan(step, k, unroll=False), form=form, batch_axis=None)
        return jax.jit(multi, donate_argnums=0), state, x
    multi = runs.vectorize(step, form=form, batch_axis=None)
    return jax.jit(steps.scan(multi, k), donate_argnums=0), state, x


def time_runs(model: str, specs: list, *, k: int = 10, windows: int = 5,
              dispatches: int = 2, min_window_s: float = 0.5) -> list[dict]:
    """Median milliseconds per step, and per run-step, of each (num_runs, form) in ``specs``
    (num_runs None: one plain run); compile times apart. The programs' windows take turns,
    round by round: on this 2-core CPU one program's 2 ms step has run at 1.2 and at 1.9 ms
    minutes apart, and timed one after another the programs drew different spells of it. A
    window is ``dispatches`` calls, more where that takes under ``min_window_s``."""
    progs = []
    for num_runs, form in specs:
        program, state, x = _program(model, num_runs, form, k)
        t = time.perf_counter()
        state, m = program(state, x)
        jax.block_until_ready(m)
        compile_s = time.perf_counter() - t
        t = time.perf_counter()
        state, m = program(state, x)
        jax.block_until_ready(m)
        calls = max(dispatches, int(np.ceil(min_window_s / (time.perf_counter() - t))))
        progs.append({"program": program, "state": state, "x": x, "calls": calls,
                      "compile_s": compile_s, "times": []})
    for _ in range(windows):
        for p in progs:
            state = p["state"]
            t = time.perf_counter()
            for _ in range(p["calls"]):
                state, m = p["program"](state, p["x"])
            jax.block_until_ready(m)
            p["times"].append((time.perf_counter() - t) / (p["calls"] * k))
            p["state"] = state
    rows = []
    for (num_runs, form), p in zip(specs, progs, strict=True):
        ms, n = 1e3 * float(np.median(p["times"])), num_runs or 1
        rows.append({"model": model, "runs": n, "form": form if num_runs else "single",
                     "ms_per_step": ms, "ms_per_run_step": ms / n,
                     "compile_s": p["compile_s"], "k": k, "backend": jax.default_backend(),
                     "device": str(jax.devices()[0])})
    return rows


def runs_table(rows: list[dict]) -> str:
    """Markdown: each row's time per step and per run-step, and the latter over one run's."""
    base = {r["model"]: r["ms_per_step"] for r in rows if r["form"] == "single"}
    out = ["| model | runs | form | ms per step | ms per run-step | per run vs 1 run | "
           "compile s |", "|---|---|---|---|---|---|---|"]
    for r in rows:
        ratio = r["ms_per_run_step"] / base[r["model"]] if r["model"] in base else float("nan")
        out.append(f"| {r['model']} | {r['runs']} | {r['form']} | {r['ms_per_step']:.2f} | "
                   f"{r['ms_per_run_step']:.2f} | {ratio:.2f}x | {r['compile_s']:.1f} |")
    return "\n".join(out)


def forms_for(platform: str) -> tuple[str, ...]:
    """The forms worth timing: both on CPU, vmap (the default there) elsewhere."""
    return runs.FORMS if platform == "cpu" else ("vmap",)

