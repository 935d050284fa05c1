"""What N runs in one program cost against N separate runs: the train step of a model, K
steps per dispatch over one batch all runs share, timed for 1 run alone and for N runs
stacked (``gan_jax.runs.vectorize``) in each form."""
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
    multi = runs.vectorize(step, form=form, batch_axis=None)
    state = jax.jit(jax.vmap(create))(jax.random.split(jax.random.PRNGKey(0), num_runs))
    return jax.jit(steps.scan(multi, k), donate_argnums=0), state, x


def time_runs(model: str, num_runs: int | None, form: str = "vmap", *, k: int = 10,
              windows: int = 5, dispatches: int = 2, min_window_s: float = 0.5) -> dict:
    """Median milliseconds per step of ``num_runs`` runs (None: one plain run), and per
    run-step; compile time apart. A window is ``dispatches`` calls, more where that takes
    under ``min_window_s``: a 2 ms step timed over 20 steps was mostly noise."""
    program, state, x = _program(model, num_runs, form, k)
    t = time.perf_counter()
    state, m = program(state, x)
    jax.block_until_ready(m)
    compile_s = time.perf_counter() - t
    t = time.perf_counter()
    state, m = program(state, x)
    jax.block_until_ready(m)
    dispatches = max(dispatches, int(np.ceil(min_window_s / (time.perf_counter() - t))))
    times = []
    for _ in range(windows):
        t = time.perf_counter()
        for _ in range(dispatches):
            state, m = program(state, x)
        jax.block_until_ready(m)
        times.append((time.perf_counter() - t) / (dispatches * k))
    ms = 1e3 * float(np.median(times))
    n = num_runs or 1
    return {"model": model, "runs": n, "form": form if num_runs else "single",
            "ms_per_step": ms, "ms_per_run_step": ms / n, "compile_s": compile_s,
            "k": k, "backend": jax.default_backend(), "device": str(jax.devices()[0])}


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

