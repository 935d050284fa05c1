"""The run configuration: every key, its default and its type, and checks against them.

Experiment files in ``experiments/configs`` start from ``defaults()`` and override values;
``validate`` rejects a key that does not exist here or a value of another type, naming it.
"""
import json

import ml_collections

from gan_jax.errors import ConfigError


def _optimizer(lr: float, b1: float, b2: float, eps: float) -> ml_collections.ConfigDict:
    # decay: "none", or "linear" to 0 over the run (then num_steps cannot change on resume).
    return ml_collections.ConfigDict(dict(name="adam", learning_rate=lr, b1=b1, b2=b2, eps=eps,
                                          weight_decay=0.0, decay="none"))


def defaults() -> ml_collections.ConfigDict:
    c = ml_collections.ConfigDict()
    c.seed = 0
    c.dtype = "float32"  # Compute dtype of G and D; params, optimizer and losses stay float32.
    # label_key: the labels carried beside the images in every batch ("" for none).
    c.dataset = dict(name="mnist", split="train", data_dir="", image_key="image",
                     label_key="label",
                     resolution=0,  # 0: as stored; else center-crop and resize to this side.
                     max_examples=0,  # 0: all (device pipeline only).
                     pipeline="device",  # device: held on the accelerator; streaming: grain.
                     augment="")  # DiffAugment ops for D's inputs, e.g. "color,translation,cutout".
    # name: mlp | dcgan | resnet (SNGAN's) | vae (the other family: see c.vae).
    # conditional: G and D take the dataset's classes
    # (conditional BatchNorm, projection D); fake_labels: G's classes are drawn "uniform"
    # or with the training data's class frequencies ("data"). spectral_norm: D's layers (dcgan, resnet).
    # d_bias: biases on the DCGAN D's layers (an SN D has no BatchNorm shift to stand in).
    # class_input: G also takes the class one-hot beside z (Mirza and Osindero).
    c.model = dict(name="mlp", z_dim=100, g_width=256, d_width=128, conditional=False,
                   fake_labels="uniform", class_input=False, spectral_norm=False,
                   d_bias=False)
    # The VAE (model.name="vae"; g_width/d_width are the decoder's/encoder's channels, z_dim
    # its latent size, optimizer.g its one optimizer): the decoder's likelihood "bernoulli"
    # (of (x + 1) / 2, binarised afresh each step with binarize) or "gaussian" (std sigma on
    # [-1, 1] pixels, learned per channel from there with learn_sigma); the ELBO's KL term
    # weighted by beta, ramped linearly from 0 over kl_warmup steps; hidden: the dense
    # layer's width between the convolutions and z.
    c.vae = dict(likelihood="bernoulli", binarize=False, sigma=1.0, learn_sigma=False,
                 beta=1.0, kl_warmup=0, hidden=256)
    c.loss = "non_saturating"  # minimax | non_saturating | hinge | wasserstein | least_squares
    c.n_dis = 1
    c.share_fake = False  # G's update reuses D's fake batch (and G's forward), as PyTorch's DCGAN.
    c.gp_weight = 0.0  # WGAN-GP weight (lambda); 0 disables.
    c.r1_weight = 0.0  # R1 gamma; D's loss gets gamma / 2 * E||grad D(x)||^2. 0 disables.
    # Keras' Adam defaults, the seed's optimizer.
    c.optimizer = dict(g=_optimizer(1e-3, 0.9, 0.999, 1e-7), d=_optimizer(1e-3, 0.9, 0.999, 1e-7))
    c.batch_size = 128  # Images per G update; each D update also sees this many real images.
    c.num_steps = 10_000  # One step = n_dis D updates + one G update.
    c.steps_per_dispatch = 10  # Steps run by one jitted call (lax.scan).
    c.ema = dict(decay=0.999, start=0)
    c.log_every = 100
    c.sample_every = 1000
    # Images in each sample grid. A conditional G's grid has one row per class (row k: class
    # k) of max(1, num_samples // classes) columns, each column one latent in every row.
    c.num_samples = 64
    # Saved every `every` steps and at the end; the last `keep` are kept, plus the best by
    # `best_metric` (any logged metric; "" disables) when it is set.
    c.checkpoint = dict(every=1000, keep=3, best_metric="", best_mode="min", async_save=True)
    c.nan_rollbacks = 0  # On NaN/Inf: roll back to the last checkpoint this many times.
    # Several runs in one program (docs/training.md): `seeds` runs per point of `sweep`, run i
    # seeded config.seed + (i % seeds); sweep: "key=v1,v2;key2=..." over scalar keys
    # (trainer.multirun.SWEEPABLE), crossed. form: "vmap" | "loop" | "map" | "" (by platform).
    c.runs = dict(seeds=1, sweep="", form="")
    # jit: one program over a ("data",) mesh (several hosts too); pmap: one per device.
    c.parallel = dict(mode="jit", num_devices=0)  # 0: all devices.
    # The EMA generator evaluated every `every` steps and at the end (0: never), as
    # experiments.evaluate would: `num` samples, metrics from fid,kid,is,pr,dc (and for a
    # conditional G intra_fid,class_acc; docs/evaluation.md), extractor
    # "" (by dataset: mnist for MNIST, else inception), reference = the training split.
    c.eval = dict(every=0, num=10_000, metrics="fid", extractor="", inception_weights="",
                  seed=0, reference_num=0, kid_subset_size=1000, knn_num=10_000)
    # Where scalars and grids go besides metrics.jsonl (always written): TensorBoard event
    # files in workdir/tensorboard, and Weights & Biases (pip install -e ".[wandb]"; mode
    # "online", "offline" (files in workdir/wandb, `wandb sync` later) or "" for W&B's
    # default: $WANDB_MODE, else online).
    c.writers = dict(tensorboard=True, wandb=False)
    c.wandb = dict(project="gan_jax", entity="", name="", group="", tags="", mode="")
    return c


# Keys gan_jax no longer has, with the value that behaves as gan_jax does now: a workdir
# whose config.json holds one at that value resumes as before.
RETIRED = {"d_joint_pass": False, "norm_metrics": True, "model.upsample": "auto",
           "model.bn_grad": "autodiff"}


def _check(cfg, ref, prefix=""):
    for key in cfg.keys():
        name = prefix + key
        if key not in ref:
            raise ConfigError(f"Unknown config key {name!r}; valid keys here: "
                              f"{sorted(prefix + k for k in ref.keys())}.")
        value, want = cfg[key], ref[key]
        if isinstance(want, ml_collections.ConfigDict):
            if not isinstance(value, ml_collections.ConfigDict):
                raise ConfigError(f"Config key {name!r} must be a group of keys, got {value!r}.")
            _check(value, want, name + ".")
        elif not (type(value) is type(want) or (type(want) is float and type(value) is int)):
            raise ConfigError(f"Config key {name!r} must be of type {type(want).__name__} "
                              f"(default {want!r}), got {value!r} of type "
                              f"{type(value).__name__}.")


def _merge(dst, src):
    for key in src.keys():
        if isinstance(src[key], ml_collections.ConfigDict):
            _merge(dst[key], src[key])
        else:
            dst[key] = src[key]


def validate(config: ml_collections.ConfigDict) -> ml_collections.ConfigDict:
    """Returns the config completed with defaults; raises ConfigError naming any bad key."""
    _check(config, defaults())
    full = defaults()
    _merge(full, config)
    for key in ("batch_size", "num_steps", "steps_per_dispatch", "log_every", "sample_every",
                "n_dis", "num_samples"):
        if full[key] < 1:
            raise ConfigError(f"Config key {key!r} must be >= 1, got {full[key]}.")
    multiples = {"log_every": full.log_every, "sample_every": full.sample_every,
                 "num_steps": full.num_steps, "checkpoint.every": full.checkpoint.every}
    for key, value in multiples.items():
        if value < 1 or value % full.steps_per_dispatch:
            raise ConfigError(f"Config key {key!r} ({value}) must be a positive multiple of "
                              f"steps_per_dispatch ({full.steps_per_dispatch}).")
    for key, value, allowed in (("dataset.pipeline", full.dataset.pipeline, ("device", "streaming")),
                                ("parallel.mode", full.parallel.mode, ("jit", "pmap")),
                                ("model.fake_labels", full.model.fake_labels, ("uniform", "data")),
                                ("vae.likelihood", full.vae.likelihood, ("bernoulli", "gaussian")),
                                ("optimizer.g.decay", full.optimizer.g.decay, ("none", "linear")),
                                ("optimizer.d.decay", full.optimizer.d.decay, ("none", "linear")),
                                ("wandb.mode", full.wandb.mode, ("", "online", "offline"))):
        if value not in allowed:
            raise ConfigError(f"Config key {key!r} must be one of {allowed}, got {value!r}.")
    for key, value, low in (("checkpoint.keep", full.checkpoint.keep, 1),
                            ("nan_rollbacks", full.nan_rollbacks, 0),
                            ("ema.start", full.ema.start, 0),
                            ("dataset.resolution", full.dataset.resolution, 0),
                            ("dataset.max_examples", full.dataset.max_examples, 0),
                            ("vae.kl_warmup", full.vae.kl_warmup, 0)):
        if value < low:  # keep=0 would delete every checkpoint, the one to resume from too.
            raise ConfigError(f"Config key {key!r} must be >= {low}, got {value}.")
    if not 0.0 <= full.ema.decay <= 1.0:
        raise ConfigError(f"Config key 'ema.decay' must be in [0, 1] (0.999 is usual), got "
                          f"{full.ema.decay}.")
    _check_eval(full)
    from gan_jax.trainer import multirun  # The sweep's keys are checked against this config.
    multirun.check(full)
    if full.checkpoint.best_mode not in ("min", "max"):
        raise ConfigError(f"Config key 'checkpoint.best_mode' must be 'min' or 'max', got "
                          f"{full.checkpoint.best_mode!r}.")
    return full


def _check_eval(full) -> None:
    e = full.eval
    if e.every < 0 or e.every % full.steps_per_dispatch:
        raise ConfigError(f"Config key 'eval.every' ({e.every}) must be 0 (off) or a positive "
                          f"multiple of steps_per_dispatch ({full.steps_per_dispatch}).")
    if e.extractor not in ("", "mnist", "fashion_mnist", "inception"):
        raise ConfigError(f"Config key 'eval.extractor' must be '', 'mnist', 'fashion_mnist' "
                          f"or 'inception', got {e.extractor!r}.")
    # Imported here: the metric names and sample needs live with the evaluation.
    from gan_jax.eval import conditional
    from gan_jax.eval.evaluate import check_counts, parse_metrics
    from gan_jax.eval.features import default_for
    from gan_jax.eval.metrics import MetricError
    try:
        metrics = parse_metrics(e.metrics)
        check_counts(metrics, e.num, None, kid_subset_size=e.kid_subset_size, is_splits=10,
                     knn_num=e.knn_num)
        # G's classes are the dataset's, not known before it is read: only whether it has any.
        conditional.check(metrics, None if full.model.conditional else 0,
                          e.extractor or default_for(full.dataset.name))
    except MetricError as err:
        raise ConfigError(f"Config group 'eval' ({e.metrics!r}, num={e.num}): {err}") from None


def flatten(d, prefix="") -> dict:
    out = {}
    for k, v in d.items():
        if isinstance(v, dict):
            out.update(flatten(v, f"{prefix}{k}."))
        else:
            out[prefix + k] = v
    return out


def to_dict(config: ml_collections.ConfigDict) -> dict:
    return json.loads(config.to_json())


def diff(old: dict, new: dict, defaults: dict | None = None) -> list[str]:
    """Lines ``key: old -> new`` for every key whose value differs. With ``defaults``, a key
    that ``old`` lacks (added to gan_jax after that run) counts as its default value, and a
    key of ``RETIRED`` that ``new`` lacks counts as equal when ``old`` has its value."""
    a, b = flatten(old), flatten(new)
    if defaults is not None:
        a = {**{k: v for k, v in flatten(defaults).items() if k not in a}, **a}
        a = {k: v for k, v in a.items() if not (k in RETIRED and k not in b and v == RETIRED[k])}
    return [f"{k}: {a.get(k, '<absent>')!r} -> {b.get(k, '<absent>')!r}"
            for k in sorted(set(a) | set(b)) if a.get(k, "<absent>") != b.get(k, "<absent>")]
