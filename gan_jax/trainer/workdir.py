"""A run's workdir as other runs and tools read it: the config a resume must match (only
``num_steps`` may grow), and the generator of a checkpoint, for sampling and evaluation."""
import json
import pathlib

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from gan_jax import models, sampling
from gan_jax.state import init_variables
from gan_jax.errors import ConfigError, WorkdirError
from gan_jax.trainer import config as config_lib
from gan_jax.trainer.checkpoint import (CheckpointDamagedError, CheckpointError, Checkpointer,
                                        leaf_specs, shape_mismatches)
from gan_jax.trainer import families


def saved_config(workdir: pathlib.Path) -> dict | None:
    path = pathlib.Path(workdir) / "config.json"
    return json.loads(path.read_text()) if path.exists() else None


def config_differences(old: dict, config) -> list[str]:
    """``key: old -> now`` lines between a saved config and ``config``; keys added to gan_jax
    since count as their defaults, retired ones at their old behaviour as equal."""
    return config_lib.diff(old, config_lib.to_dict(config),
                           defaults=config_lib.to_dict(config_lib.defaults()))


def check_workdir(workdir: pathlib.Path, config) -> int | None:
    """Refuses a workdir whose run had another config; a larger ``num_steps`` extends the
    run, unless a learning-rate schedule spans ``num_steps``. Returns the run's earlier
    ``num_steps`` when this extends it, else None. Reads only."""
    old = saved_config(workdir)
    if old is None:
        return None
    differences = config_differences(old, config)
    extended = None
    if any(d.startswith("num_steps:") for d in differences) and config.num_steps > old[
            "num_steps"]:
        decaying = [f"optimizer.{p}.decay" for p in ("g", "d")
                    if config.optimizer[p].decay != "none"]
        if decaying and len(differences) == 1:
            raise WorkdirError(
                f"{workdir} holds a run of {old['num_steps']} steps whose learning rates decay "
                f"to 0 over num_steps ({', '.join(decaying)}); its schedule would change for "
                "the steps already run, so it cannot be extended to "
                f"{config.num_steps}. Start a new --workdir for the longer run.")
        if not decaying:
            differences = [d for d in differences if not d.startswith("num_steps:")]
            extended = old["num_steps"]
    if differences:
        raise WorkdirError(
            f"{workdir} holds a run with another config; refusing to mix them. Keys that "
            "differ (workdir -> now):\n  " + "\n  ".join(differences)
            + _shape_changes(workdir, config)
            + "\nUse a new --workdir, or the same config to continue that run (num_steps "
            "may grow).")
    return extended


def check_directory(workdir, *, writable: bool = True) -> None:
    """Refuses, before any data is loaded or anything compiled, a ``workdir`` that is a file
    and, with ``writable``, one this process cannot write into (a read-only file system,
    no permission), or cannot create. An existing workdir is checked with a temporary file
    that leaves no trace; a new one through the directory it would be created in."""
    import os
    import tempfile

    workdir = pathlib.Path(workdir)
    if workdir.exists() and not workdir.is_dir():
        raise WorkdirError(f"--workdir {workdir} is a file, not a directory: pass the run's "
                           "directory (experiments.main creates it), or move the file away.")
    if not writable:
        return
    fix = ("gan_jax writes the run's files there; pass a --workdir on a writable disk (copy "
           "the run there to go on with it).")
    if workdir.is_dir():
        try:
            with tempfile.TemporaryFile(dir=workdir):
                pass
        except OSError as e:
            raise WorkdirError(f"--workdir {workdir} is not writable ({e.strerror or e}): "
                               + fix) from None
        return
    parent = workdir.absolute().parent
    while not parent.exists():
        parent = parent.parent
    if not parent.is_dir():
        raise WorkdirError(f"--workdir {workdir} cannot be created: {parent} is a file, not a "
                           "directory.")
    if not os.access(parent, os.W_OK | os.X_OK):
        read_only = os.statvfs(parent).f_flag & os.ST_RDONLY
        raise WorkdirError(f"--workdir {workdir} cannot be created: {parent} is "
                           f"{'on a read-only file system' if read_only else 'not writable'}; "
                           "pass a --workdir on a writable disk.")


def _shape_changes(workdir: pathlib.Path, config) -> str:
    """The arrays of the workdir's latest checkpoint that ``config`` would reshape, if any."""
    if not (workdir / "checkpoints").is_dir():
        return ""
    ckpt = Checkpointer(workdir / "checkpoints", read_only=True)
    try:
        if ckpt.latest_step() is None:
            return ""
        info = ckpt.run_info()
        shape = tuple(info["image_shape"])
        family = families.build(config, shape, info.get("num_classes"))
        ckpt.check_compatible(jax.eval_shape(family.create(shape), jax.random.PRNGKey(0)))
        return ""
    except CheckpointError as e:
        return "\n" + str(e)
    finally:
        ckpt.close()


def runs_of(config: dict) -> int:
    """How many runs a saved config (config.json, a checkpoint's) trained in one program."""
    from gan_jax.trainer import multirun
    return multirun.saved_count(config)


def _pick_run(g, n: int, run: int | None, where):
    """Run ``run``'s arrays of a generator part saved by a job of ``n`` runs."""
    if n == 1:
        if run not in (None, 0):
            raise ConfigError(f"{where} holds a single run; leave --run (run=) out or use 0.")
        return g
    if run is None:
        raise ConfigError(f"{where} holds {n} runs in one checkpoint; choose one with --run "
                          f"(run=) in 0..{n - 1}.")
    if not 0 <= run < n:
        raise ConfigError(f"Run {run} is not one of the {n} runs of {where}; use 0..{n - 1}.")
    return jax.tree.map(lambda x: x[run], g)


def load_generator(workdir, *, step: int | None = None, ema: bool = True,
                   run: int | None = None):
    """Reads G's part of a run's checkpoint (D and the optimizer states are never built; a
    VAE's decoder is its G); of a job of several runs, run ``run``'s.
    Returns (draw, z_dim, step, run_info): ``draw(z_BZ, y_B=None)`` is a jitted function
    giving float32 images in [-1, 1], NHWC (``y_B``: the classes, for a conditional G);
    ``run_info["conditional_classes"]`` is G's number of classes (0: unconditional)."""
    directory = pathlib.Path(workdir) / "checkpoints"
    ckpt = Checkpointer(directory, read_only=True)
    try:
        step, info, g = ckpt.restore_generator(step)
    except CheckpointDamagedError as e:
        # Read-only: the damaged checkpoint stays where it is (a resume moves it aside).
        good = ckpt.newest_good_generator(below=e.step)
        raise CheckpointDamagedError(
            f"{e} " + (f"The newest checkpoint whose generator passes its check is step "
                       f"{good} (--step={good})." if good is not None else
                       "No earlier checkpoint's generator passes its check."), e.step) from None
    finally:
        ckpt.close()
    g = _pick_run(g, runs_of(info["config"]), run, directory.parent)
    config = ml_collections.ConfigDict(info["config"])
    G = families.generator(config, tuple(info["image_shape"]), info.get("num_classes"))
    _check_shapes(g, G, (2, G.z_dim), f"The generator in {directory / str(step)}",
                  config.model.name)
    params = g["ema_params"] if ema else g["params"]
    g_vars = g.get("vars") or {}
    draw = jax.jit(lambda z, y=None: sampling.generate(G, params, g_vars, z, y,
                                                        batch_stats=ema))
    return draw, G.z_dim, step, {**info, "conditional_classes": models.num_classes(G)}


def _check_shapes(saved_part: dict, module, x_shape, what: str, model: str) -> None:
    """CheckpointError, naming the first mismatched leaves, where a restored part's params
    and variables are not the shapes ``module`` initialises from an input of ``x_shape``."""
    expected = jax.eval_shape(lambda: init_variables(jax.random.PRNGKey(0), module,
                                                     jnp.zeros(x_shape, jnp.float32)))
    saved = {"params": saved_part["params"], **(saved_part.get("vars") or {})}
    problems = shape_mismatches(leaf_specs(saved), leaf_specs(expected))
    if problems:
        raise CheckpointError(f"{what} does not match the {model} model of its config:\n  "
                              + "\n  ".join(problems[:20]))


def sample(workdir, num: int = 64, *, step: int | None = None, ema: bool = True,
           seed: int = 0, chunk: int = 1000, run: int | None = None):
    """Draws ``num`` images (uint8 NHWC) from a run's checkpoint, reading only G's part and
    the run info; D and the optimizer states are never built. ``z`` comes from ``seed``
    alone, so the same call draws the same images. Returns (images, step); for a
    conditional G's classes, see ``sample_labelled``."""
    images, _, step = sample_labelled(workdir, num, step=step, ema=ema, seed=seed, chunk=chunk,
                                      run=run)
    return images, step


def sample_labelled(workdir, num: int = 64, *, label: int | None = None,
                    step: int | None = None, ema: bool = True, seed: int = 0,
                    chunk: int = 1000, run: int | None = None):
    """``sample`` with a conditional G's classes: ``label`` K draws all ``num`` images of
    class K; without it, one class per row as the training grids (``sampling.grid_latents``:
    ``num`` rounded down to whole rows of C classes, at least one column). Returns (images,
    labels, step); labels (int32 [B]) are None for an unconditional G, which takes no
    ``label``. ``run``: which run of a job of several (``load_generator``)."""
    draw, z_dim, step, info = load_generator(workdir, step=step, ema=ema, run=run)
    classes = info["conditional_classes"]
    if label is None:
        z, y = sampling.grid_latents(jax.random.PRNGKey(seed), num, z_dim, classes)
    elif not classes:
        raise ConfigError(f"The generator of {workdir} is unconditional (its config has "
                          f"model.conditional=False), so it has no class {label}; leave the "
                          "class (--class, label=) out.")
    elif not 0 <= label < classes:
        raise ConfigError(f"Class {label} is not one of the {classes} classes of {workdir}; "
                          f"ask for one in 0..{classes - 1} (--class, label=), or none for one "
                          "class per row.")
    else:
        z, y = sampling.latents(seed, num, z_dim), jnp.full((num,), label, jnp.int32)
    out = [sampling.to_uint8(x) for x in sampling.in_chunks(draw, z, chunk, y)]
    return np.concatenate(out), (None if y is None else np.asarray(y)), step


def load_vae(workdir, *, step: int | None = None, ema: bool = True, run: int | None = None):
    """A VAE run's encoder and decoder from its checkpoint (the optimizer state is never
    read). Returns (encoder, decoder, params, vars, step, run_info), ``params`` and ``vars``
    as the state's ``{"encoder", "decoder"}`` trees (the EMA params unless ``ema=False``),
    for ``gan_jax.vae_steps``' functions."""
    directory = pathlib.Path(workdir) / "checkpoints"
    ckpt = Checkpointer(directory, read_only=True)
    try:
        info = ckpt.run_info(step)
        if info["config"]["model"]["name"] != "vae":
            raise ConfigError(f"{workdir} holds a GAN (model.name="
                              f"{info['config']['model']['name']!r}), not a VAE; "
                              "reconstructions, interpolations and the nll metric (the test "
                              "ELBO) need a run trained with model.name='vae' (drop nll from "
                              "--metrics for a GAN).")
        step, info, d = ckpt.restore_generator(step)
        _, _, e = ckpt.restore_generator(step, part="encoder")
    finally:
        ckpt.close()
    n = runs_of(info["config"])
    d, e = (_pick_run(x, n, run, directory.parent) for x in (d, e))
    config = ml_collections.ConfigDict(info["config"])
    family = families.build(config, tuple(info["image_shape"]), info.get("num_classes"))
    for part, saved, module, x_shape in (
            ("encoder", e, family.encoder, (2, *info["image_shape"])),
            ("decoder", d, family.decoder, (2, family.decoder.z_dim))):
        _check_shapes(saved, module, x_shape, f"The {part} in {directory / str(step)}", "vae")
    which = "ema_params" if ema else "params"
    params = {"encoder": e[which], "decoder": d[which]}
    variables = {"encoder": e.get("vars") or {}, "decoder": d.get("vars") or {}}
    return family.encoder, family.decoder, params, variables, step, info
