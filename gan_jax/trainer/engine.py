"""What a config asks for, built (optimizers, the pure train step, the state constructor),
and where and how the step runs: state, data and the compiled program on the devices.

Three layouts, chosen by the config, behind one interface for the loop:
  jit + device data     one program over a ("data",) mesh (one or many hosts); the state is
                        replicated, the dataset split into one shard per device
  jit + streaming       the same program fed [K, batch] arrays by a grain pipeline
  pmap + device data    one program per device (one host), state stacked per device
"""
import functools

import jax
import jax.numpy as jnp
import optax
from jax.sharding import PartitionSpec as P

from gan_jax import losses, parallel, steps
from gan_jax import state as state_lib
from gan_jax.data import augment as augment_lib
from gan_jax.data import device
from gan_jax.errors import ConfigError


def make_optimizer(cfg, num_updates: int, inject: bool = False) -> optax.GradientTransformation:
    """``cfg``: a config's ``optimizer.g`` or ``optimizer.d``; ``num_updates``: that player's
    updates in the whole run, over which ``decay="linear"`` takes the rate to 0. ``inject``:
    the numbers live in the optimizer's state (``optax.inject_hyperparams``), so that runs
    stacked in one program can each have their own (``runs.set_hyperparams``)."""
    lr = cfg.learning_rate
    if cfg.decay == "linear":
        lr = optax.linear_schedule(cfg.learning_rate, 0.0, num_updates)
    wrap = optax.inject_hyperparams if inject else (lambda f: f)
    if cfg.name == "adam":
        return wrap(optax.adam)(lr, b1=cfg.b1, b2=cfg.b2, eps=cfg.eps)
    if cfg.name == "adamw":
        return wrap(optax.adamw)(lr, b1=cfg.b1, b2=cfg.b2, eps=cfg.eps,
                                 weight_decay=cfg.weight_decay)
    if cfg.name == "rmsprop":
        return wrap(optax.rmsprop)(lr, eps=cfg.eps)
    if cfg.name == "sgd":
        return wrap(optax.sgd)(lr, momentum=cfg.b1 or None)
    raise ConfigError(f"optimizer name must be adam, adamw, rmsprop or sgd, got {cfg.name!r}.")


def injected(config, player: str) -> bool:
    """Whether ``config.runs.sweep`` varies a hyperparameter of ``optimizer.<player>``."""
    from gan_jax.trainer import multirun
    return any(k.startswith(f"optimizer.{player}.")
               for k in multirun.parse_sweep(config.runs.sweep))


def make_step(config, G, D, *, axis_name: str | None = None, batch_sharding=None,
              class_probs=None, hparams=None):
    """The pure ``(state, batch) -> (state, metrics)`` step that ``config`` describes;
    ``class_probs``: the frequencies G's classes are drawn with (None: uniform);
    ``hparams``: values (traced, per run) that replace ``ema.decay``, ``gp_weight`` or
    ``r1_weight``."""
    hp = hparams or {}
    penalties = [losses.penalty(k, hp.get(key, getattr(config, key)))
                 for k, key in (("gp", "gp_weight"), ("r1", "r1_weight"))
                 if key in hp or getattr(config, key)]
    d_penalty = None
    if penalties:
        d_penalty = lambda *a, **kw: sum(p(*a, **kw) for p in penalties)
    try:
        augment = augment_lib.make(config.dataset.augment)
    except ValueError as e:
        raise ConfigError(f"config.dataset.augment: {e}") from None
    return steps.make_train_step(G, D, loss=config.loss, n_dis=config.n_dis,
                                 ema_decay=hp.get("ema.decay", config.ema.decay),
                                 ema_start=config.ema.start,
                                 d_penalty=d_penalty, augment=augment,
                                 share_fake=config.share_fake, axis_name=axis_name,
                                 batch_sharding=batch_sharding, class_probs=class_probs)


def make_create(config, G, D, image_shape):
    """``create(key) -> GANState`` for this config (pure; jit or shard it as needed)."""
    return functools.partial(
        state_lib.create, G=G, D=D,
        g_tx=make_optimizer(config.optimizer.g, config.num_steps, injected(config, "g")),
        d_tx=make_optimizer(config.optimizer.d, config.num_steps * config.n_dis,
                            injected(config, "d")),
        image_shape=tuple(image_shape))


@jax.jit
def all_finite(trees):
    """Whether every array in ``trees`` is finite (one device scalar)."""
    return jnp.all(jnp.array([jnp.all(jnp.isfinite(x)) for x in jax.tree.leaves(trees)]))


class Engine:
    """The trainer's step on this process's devices. ``data``: the host dataset for the
    device pipeline (uint8 images, or a dict {"image", "label"} of arrays), with
    ``num_classes`` from its metadata (the streaming pipeline reads its own); ``mesh``: the
    ("data",) mesh to run on (default: ``config.parallel.num_devices`` of this process's
    devices); ``class_probs``: the class frequencies a conditional G's classes are drawn
    with (None: uniform)."""

    # How the K-step program is built. The benchmark's ablations change these in a subclass
    # (gan_jax.perf); the trainer keeps them.
    donate = True  # The state's buffers are donated to the program.
    unroll = None  # The K-step loop unrolled (None: on CPU only; steps.default_unroll).
    data_order = "shuffled"  # Of device-resident data (data.device.ORDERS).

    def __init__(self, config, *, G=None, D=None, family=None, image_shape, init_key,
                 data_key, data=None, num_classes: int | None = None, mesh=None,
                 class_probs=None):
        from gan_jax.trainer import families
        self.config = config
        # The loop passes its family (trainer.families); G and D alone make a GAN's.
        self.family = family if family is not None else families.GAN(config, G, D)
        self.class_probs = class_probs
        self.k = config.steps_per_dispatch
        self.rows = config.n_dis * config.batch_size
        self.pmap = config.parallel.mode == "pmap"
        self.streaming = config.dataset.pipeline == "streaming"
        self._init_key, self._data_key = init_key, data_key
        self.image_shape = tuple(image_shape)
        self._create = self.family.create(image_shape)
        self._data_host, self._next, self._prefetch, self._pipeline = data, None, None, None
        if self.pmap:
            if jax.process_count() > 1 or self.streaming:
                raise ConfigError("parallel.mode='pmap' runs on one host with device-resident "
                                  "data; use parallel.mode='jit' for several hosts or "
                                  "dataset.pipeline='streaming'.")
            n = config.parallel.num_devices or jax.local_device_count()
            if n > jax.local_device_count():
                raise ConfigError(f"config.parallel.num_devices={n} but this host has "
                                  f"{jax.local_device_count()} devices.")
            self.devices = jax.local_devices()[:n]
            if self.rows % n:
                raise ConfigError(f"The global batch of {self.rows} images does not divide "
                                  f"evenly over {n} devices; use a multiple of {n}.")
            self.shards = n
        else:
            self.mesh = mesh if mesh is not None else parallel.make_mesh(
                config.parallel.num_devices)
            parallel.check_batch(self.rows, self.mesh)
            self.shards = self.mesh.devices.size
        self.train_step = self.make_step(*self.family.networks)
        if self.streaming:
            from gan_jax.data import streaming  # grain and tfds: only when streaming
            ds = config.dataset
            self._pipeline = streaming.Pipeline(
                ds.name, ds.split, ds.data_dir or None, rows=self.rows // jax.process_count(),
                seed=config.seed, shard_index=jax.process_index(),
                shard_count=jax.process_count(), image_key=ds.image_key,
                label_key=ds.label_key or None, resolution=ds.resolution or None)
        self.num_classes = self._pipeline.num_classes if self.streaming else num_classes
        self.start_position = self.data_position()  # Where a rollback to step 0 reads.

    def make_step(self, *networks):
        """The family's train step, laid out for this engine's devices (``networks``: the
        family's, which subclasses that build another step use)."""
        if self.pmap:
            return self.family.step(axis_name=parallel.AXIS, class_probs=self.class_probs)
        # Latent batches split over the devices like the real ones.
        return self.family.step(batch_sharding=parallel.batch_sharded(self.mesh),
                                class_probs=self.class_probs)

    # -- state ---------------------------------------------------------------------------
    def abstract_state(self):
        return jax.eval_shape(self._create, self._init_key)

    def new_state(self):
        """A fresh state, on the devices as this layout wants it."""
        if self.pmap:
            return parallel.replicate(jax.jit(self._create)(self._init_key), self.devices)
        return parallel.create_state(self._create, self._init_key, self.mesh)

    def restore_template(self):
        """Arrays placed as a checkpoint restore should place them."""
        return jax.jit(self._create)(self._init_key) if self.pmap else self.new_state()

    def place(self, restored):
        return parallel.replicate(restored, self.devices) if self.pmap else restored

    def checkpoint_view(self, state):
        return parallel.unreplicate(state) if self.pmap else state

    def meter(self, run_info: dict):
        """The loop's metric meter, as a checkpoint's run info left it."""
        from gan_jax.trainer.periodic import Meter
        return Meter.of(run_info)

    def step_of(self, state) -> int:
        return int(parallel.to_host(self.checkpoint_view(state).step))

    # -- data ----------------------------------------------------------------------------
    def data_info(self) -> dict:
        info = {"kind": "streaming" if self.streaming else "device_shuffle",
                "seed": self.config.seed, "rows_per_step": self.rows}
        if self.streaming:
            info["examples_per_shard"] = self._pipeline.examples_per_shard
        else:
            info["num_examples"] = device.rows_of(self._data_host)
        return info

    def data_position(self) -> dict:
        """Where the input is: for streaming, the grain state before the next step's batch
        (the batches of a step are a function of the step otherwise)."""
        if not self.streaming:
            return {"shards": self.shards}
        if self._prefetch is None:
            return {"shards": self.shards, "iterator": self._pipeline.get_state()}
        if self._next is None:
            self._next = self._prefetch.next()
        return {"shards": self.shards, "iterator": self._next[0]}

    def set_data_position(self, position: dict) -> None:
        """Moves the input to ``position`` (``data_position``'s), also while it prefetches:
        the batches read ahead are dropped and reading restarts from there."""
        if not self.streaming:
            return
        running = self._prefetch is not None
        if running:
            self._prefetch.close()
            self._prefetch, self._next = None, None
        self._pipeline.set_state(position["iterator"])
        if running:
            self._start_prefetch()

    # -- programs ------------------------------------------------------------------------
    def compile(self, state):
        """Compiles the K-step program for ``state``; returns nothing (time it outside)."""
        if self.streaming:
            multi = steps.scan(self.train_step, self.k, self.unroll)
            self._start_prefetch()
            sharding = jax.sharding.NamedSharding(self.mesh, P(None, parallel.AXIS))
            images = jax.ShapeDtypeStruct((self.k, self.rows, *self.image_shape), jnp.uint8,
                                          sharding=sharding)
            spec = images if not self._pipeline.labelled else {
                "image": images,
                "label": jax.ShapeDtypeStruct((self.k, self.rows), jnp.int32, sharding=sharding)}
            self.compiled = parallel.shard_step(
                multi, self.mesh, batch_spec=P(None, parallel.AXIS), donate=self.donate
            ).lower(state, spec).compile()
            return
        if self.pmap:
            self._data = device.put(self._data_host, pmap_devices=self.devices)
        else:
            self._data = device.put(self._data_host, mesh=self.mesh)
        self.compiled = self._data_program().lower(state, self._data).compile()

    def _start_prefetch(self):
        from gan_jax.data import streaming
        put = lambda host: jax.tree.map(
            lambda x: parallel.put_global(x, self.mesh, P(None, parallel.AXIS)), host)
        self._prefetch = streaming.DevicePrefetcher(self._pipeline, self.k, put)

    def _data_program(self):
        n = device.rows_of(self._data_host)
        if self.pmap:
            multi = device.make_data_steps(
                self.train_step, self.k, rows_per_step=self.rows // self.shards, num_examples=n,
                key=self._data_key, axis_name=parallel.AXIS, order=self.data_order,
                unroll=self.unroll, pmap_devices=self.shards)
            return parallel.pmap_step(multi, self.donate)
        multi = device.make_data_steps(
            self.train_step, self.k, rows_per_step=self.rows, num_examples=n,
            key=self._data_key, mesh=self.mesh, order=self.data_order, unroll=self.unroll)
        return parallel.shard_step(multi, self.mesh, donate=self.donate)

    def metric_names(self) -> tuple[str, ...]:
        """The names of the metrics the compiled step returns."""
        return tuple(self.compiled.out_info[1])

    def dispatch(self, state):
        """Runs K steps; returns (state, metrics stacked over K), both still on the device."""
        if not self.streaming:
            state, metrics = self.compiled(state, self._data)
            return state, (parallel.unreplicate(metrics) if self.pmap else metrics)
        if self._next is None:
            self._next = self._prefetch.next()
        _, batches = self._next
        self._next = None
        return self.compiled(state, batches)

    def generator_view(self, state):
        """(params, non-param collections, EMA params) of the network that draws samples."""
        return self.family.generator_view(self.checkpoint_view(state))

    def all_finite(self, view) -> bool:
        """Whether the family's checked arrays (parameters, EMA) of a ``checkpoint_view``
        are all finite."""
        return bool(parallel.to_host(all_finite(self.family.checked(view))))

    def close(self) -> None:
        if self._prefetch is not None:
            self._prefetch.close()
