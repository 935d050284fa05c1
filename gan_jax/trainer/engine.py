"""Where and how the train step runs: state, data and the compiled program on the devices.

Three layouts, chosen by the config, behind one interface for the loop:
  jit + device data     one program over a ("data",) mesh (one or many hosts); the state is
                        replicated, the dataset split into one shard per device
  jit + streaming       the same program fed [K, batch] arrays by a grain pipeline
  pmap + device data    one program per device (one host), state stacked per device
"""
import jax
import jax.numpy as jnp
from jax.sharding import PartitionSpec as P

from gan_jax import components, parallel, steps
from gan_jax.data import device
from gan_jax.errors import ConfigError


class Engine:

    def __init__(self, config, *, G, D, image_shape, init_key, data_key, images=None,
                 donate: bool = True, unroll: bool | None = None, step_options=None,
                 data_order: str = "shuffled", mesh=None):
        """``donate``, ``unroll`` (of the K-step loop; None: unrolled on CPU only),
        ``step_options`` (extra ``steps.make_train_step`` arguments) and ``data_order``
        (of device-resident data, see ``data.device``) exist for the benchmark's
        ablations, and ``mesh`` (instead of one over this process's devices, e.g. over
        compile-only devices, see ``compile_abstract``) for its compile-only mode; the
        trainer keeps the defaults."""
        self.config = config
        self._donate, self._unroll, self._data_order = donate, unroll, data_order
        self.k = config.steps_per_dispatch
        self.rows = config.n_dis * config.batch_size
        self.pmap = config.parallel.mode == "pmap"
        self.streaming = config.dataset.pipeline == "streaming"
        self._init_key, self._data_key = init_key, data_key
        self.image_shape = tuple(image_shape)
        self._create = components.make_create(config, G, D, image_shape)
        self._images_host, self._next, self._prefetch, self._pipeline = images, None, None, None
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
        options = dict(step_options or {})
        if not self.pmap:  # Latent batches split over the devices like the real ones.
            options.setdefault("batch_sharding", parallel.batch_sharded(self.mesh))
        self.train_step = components.make_step(config, G, D,
                                               axis_name=parallel.AXIS if self.pmap else None,
                                               **options)
        if self.streaming:
            from gan_jax.data import streaming  # grain and tfds: only when streaming
            ds = config.dataset
            self._pipeline = streaming.Pipeline(
                ds.name, ds.split, ds.data_dir or None, rows=self.rows // jax.process_count(),
                seed=config.seed, shard_index=jax.process_index(),
                shard_count=jax.process_count(), image_key=ds.image_key,
                resolution=ds.resolution or None)
        self.start_position = self.data_position()  # Where a rollback to step 0 reads.

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

    def step_of(self, state) -> int:
        return int(parallel.to_host(self.checkpoint_view(state).step))

    # -- data ----------------------------------------------------------------------------
    def data_info(self) -> dict:
        info = {"kind": "streaming" if self.streaming else "device_shuffle",
                "seed": self.config.seed, "rows_per_step": self.rows}
        if self.streaming:
            info["examples_per_shard"] = self._pipeline.examples_per_shard
        else:
            info["num_examples"] = len(self._images_host)
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
            multi = steps.scan(self.train_step, self.k, self._unroll)
            self._start_prefetch()
            spec = jax.ShapeDtypeStruct((self.k, self.rows, *self.image_shape), jnp.uint8,
                                        sharding=jax.sharding.NamedSharding(
                                            self.mesh, P(None, parallel.AXIS)))
            self._run = parallel.shard_step(multi, self.mesh, batch_spec=P(None, parallel.AXIS),
                                            donate=self._donate).lower(state, spec).compile()
            return
        if self.pmap:
            self._images = device.put(self._images_host, pmap_devices=self.devices)
        else:
            self._images = device.put(self._images_host, mesh=self.mesh)
        self._run = self._data_program().lower(state, self._images).compile()

    def _start_prefetch(self):
        from gan_jax.data import streaming
        put = lambda host: parallel.put_global(host, self.mesh, P(None, parallel.AXIS))
        self._prefetch = streaming.DevicePrefetcher(self._pipeline, self.k, put)

    def _data_program(self):
        n = len(self._images_host)
        if self.pmap:
            multi = device.make_data_steps(
                self.train_step, self.k, rows_per_step=self.rows // self.shards, num_examples=n,
                key=self._data_key, axis_name=parallel.AXIS, order=self._data_order,
                unroll=self._unroll, pmap_devices=self.shards)
            return parallel.pmap_step(multi, self._donate)
        multi = device.make_data_steps(
            self.train_step, self.k, rows_per_step=self.rows, num_examples=n,
            key=self._data_key, mesh=self.mesh, order=self._data_order, unroll=self._unroll)
        return parallel.shard_step(multi, self.mesh, donate=self._donate)

    def compile_abstract(self):
        """Compiles the K-step program (jit over the mesh, device-resident data) from
        shapes alone: nothing is placed on the devices, so they may be compile-only ones
        (a GPU's topology on a machine without one). Then only ``hlo_text``,
        ``cost_analysis`` and ``program_bytes`` work."""
        if self.pmap or self.streaming:
            raise ConfigError("compile_abstract compiles the jit program with device-resident "
                              "data; set parallel.mode='jit' and dataset.pipeline='device'.")
        rep = parallel.replicated(self.mesh)
        state = jax.tree.map(lambda s: jax.ShapeDtypeStruct(s.shape, s.dtype, sharding=rep),
                             self.abstract_state())
        n = device.kept_size(len(self._images_host), self.shards)
        images = jax.ShapeDtypeStruct((n, *self.image_shape), jnp.uint8,
                                      sharding=parallel.batch_sharded(self.mesh))
        self._run = self._data_program().lower(state, images).compile()

    def hlo_text(self) -> str:
        """The compiled K-step program as optimized HLO (what a profile's op names refer to)."""
        return self._run.as_text()

    def metric_names(self) -> tuple[str, ...]:
        """The names of the metrics the compiled step returns."""
        return tuple(self._run.out_info[1])

    def cost_analysis(self) -> dict:
        """XLA's estimate for the compiled K-step program on one device ("flops", "bytes
        accessed", ...). GPU backends leave cuDNN convolutions out of "flops"."""
        return self._run.cost_analysis()

    def program_bytes(self) -> int | None:
        """Device memory the compiled K-step program needs on one device: its arguments
        (state, dataset), the outputs that do not reuse donated arguments, and scratch
        (XLA's buffer assignment; None where the backend does not say)."""
        m = self._run.memory_analysis()
        if m is None:
            return None
        return (m.argument_size_in_bytes + m.output_size_in_bytes - m.alias_size_in_bytes
                + m.temp_size_in_bytes)

    def dispatch(self, state):
        """Runs K steps; returns (state, metrics stacked over K), both still on the device."""
        if not self.streaming:
            state, metrics = self._run(state, self._images)
            return state, (parallel.unreplicate(metrics) if self.pmap else metrics)
        if self._next is None:
            self._next = self._prefetch.next()
        _, batches = self._next
        self._next = None
        return self._run(state, batches)

    def generator_view(self, state):
        s = self.checkpoint_view(state)
        return s.g_params, s.g_vars, s.ema_params

    def close(self) -> None:
        if self._prefetch is not None:
            self._prefetch.close()
