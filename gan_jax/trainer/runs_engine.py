"""The engine for several runs in one program (``config.runs``): every state array has a
leading run axis, each run its own seed (init, noise and data order) and swept values.

Layouts over the ("data",) mesh (``gan_jax.runs.layout_for``): "runs" when the runs divide
evenly over the devices (each device trains its N / D runs; the per-run batches are
gathered from the dataset's shards and moved to their run's device), "batch" otherwise
(every device holds every run and a slice of each run's batch, as for one run). The
dataset is split over the devices as for one run, so run i draws the batches a single run
with its seed draws on the same devices.
"""
import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import NamedSharding

from gan_jax import parallel, runs
from gan_jax.data import device
from gan_jax.errors import ConfigError
from gan_jax.trainer import multirun
from gan_jax.trainer.engine import Engine


class RunsEngine(Engine):
    """``Engine`` over N runs; ``init_key`` and ``data_key`` are ignored (each run's come from
    its own seed)."""

    def __init__(self, config, **kwargs):
        self.settings = multirun.settings(config)
        self.num_runs = len(self.settings)
        keys = [jax.random.split(jax.random.PRNGKey(s["seed"]), 3) for s in self.settings]
        self.init_keys = jnp.stack([k[0] for k in keys])
        self.data_keys = jnp.stack([k[1] for k in keys])
        self.sample_keys = jnp.stack([k[2] for k in keys])
        mesh = kwargs.get("mesh") or parallel.make_mesh(config.parallel.num_devices)
        self.form = config.runs.form or runs.default_form()
        if not config.runs.form and self.form == "loop" and config.model.name == "mlp" \
                and mesh.devices.size == 1:
            # No convolutions, so the rolled loop is fast on CPU, and its runs stay in cache.
            self.form = "map"
        if self.form == "map" and mesh.devices.size != 1:
            raise ConfigError("runs.form='map' runs on one device; use 'vmap' or 'loop' "
                              "with several (parallel.num_devices).")
        self.layout = runs.layout_for(self.num_runs, mesh.devices.size)
        kwargs["mesh"] = mesh
        super().__init__(config, **kwargs)
        # The loop form's program holds every run's copy of each of its steps (unrolled on
        # CPU), so its compile time grows with N x K: it runs K / N steps per call instead
        # (the largest divisor of K at most that), called until the dispatch's K are done.
        self.k_call = self.k
        if self.form == "loop":
            self.k_call = max(d for d in range(1, self.k + 1)
                              if self.k % d == 0 and d <= max(1, self.k // self.num_runs))
        if self.streaming or self.pmap:
            raise ConfigError("Several runs need parallel.mode='jit' and dataset.pipeline="
                              "'device'.")

    def _swept(self, keys) -> dict:
        return {k: np.array([s[k] for s in self.settings], np.float32)
                for k in keys if k in self.settings[0]}

    def make_step(self, *networks):
        del networks
        sharding = parallel.batch_sharded(self.mesh) if self.layout == "batch" else None
        hp = self._swept(multirun.STEP_KEYS)
        if hp:
            def step(**values):  # {"ema.decay": run i's value, ...}
                return self.family.step(batch_sharding=sharding, class_probs=self.class_probs,
                                        hparams=values)
        else:
            step, hp = self.family.step(batch_sharding=sharding,
                                        class_probs=self.class_probs), None
        if self.form == "map":  # Vectorized around each run's K steps: _data_program.
            self._map_hparams = hp
            return step
        return runs.on_mesh(step, self.mesh, layout=self.layout, hparams=hp, form=self.form)

    # -- state ---------------------------------------------------------------------------
    def _state_sharding(self, abstract):
        s = NamedSharding(self.mesh, runs.state_spec(self.layout))
        return jax.tree.map(lambda _: s, abstract)

    def abstract_state(self):
        return jax.eval_shape(jax.vmap(self._create), self.init_keys)

    def new_state(self):
        create = jax.vmap(self._create)
        state = jax.jit(create, out_shardings=self._state_sharding(self.abstract_state()))(
            self.init_keys)
        return self._with_optimizer_hparams(state)

    def _with_optimizer_hparams(self, state):
        swept = self._swept(k for k in multirun.SWEEPABLE if k.startswith("optimizer."))
        if not swept:
            return state
        parts = state.parts()
        for key, values in swept.items():
            _, player, name = key.split(".")
            part = self.family.optimizer_parts[player]
            parts["optimizer"][part] = runs.set_hyperparams(parts["optimizer"][part],
                                                            **{name: values})
        sharding = NamedSharding(self.mesh, runs.state_spec(self.layout))
        return jax.device_put(state.with_parts(parts), sharding)

    def restore_template(self):
        return self.new_state()

    def meter(self, run_info: dict):
        from gan_jax.trainer.periodic import say
        return multirun.RunsMeter.of(run_info, self.num_runs, say)

    def step_of(self, state) -> int:
        return int(np.max(parallel.to_host(state.step)))

    # -- data ----------------------------------------------------------------------------
    def data_info(self) -> dict:
        return {**super().data_info(), "runs": [s["seed"] for s in self.settings]}

    def _data_program(self):
        n = device.rows_of(self._data_host)
        if self.form == "map":
            multi = device.make_run_data_loops(
                self.train_step, self.k, keys=self.data_keys, hparams=self._map_hparams,
                rows_per_step=self.rows, num_examples=n, order=self.data_order)
            return parallel.shard_step(multi, self.mesh, donate=self.donate,
                                       state_spec=runs.state_spec(self.layout))
        multi = device.make_run_data_steps(
            self.train_step, self.k_call, rows_per_step=self.rows, num_examples=n,
            keys=self.data_keys, mesh=self.mesh, order=self.data_order, unroll=self.unroll)
        return parallel.shard_step(multi, self.mesh, donate=self.donate,
                                   state_spec=runs.state_spec(self.layout))

    def dispatch(self, state):
        """Runs K steps (``K / k_call`` calls); each metric as the calls' parts, [k_call, N]
        each, which the meter joins on the host: joining them on the devices would be one
        more program per dispatch, and bursts of small programs over XLA:CPU's fake devices
        have aborted at their rendezvous limit (see ``parallel.unreplicate``)."""
        parts = []
        for _ in range(self.k // self.k_call):
            state, metrics = self.compiled(state, self._data)
            parts.append(metrics)
        return state, {k: tuple(p[k] for p in parts) for k in parts[0]}

    def metric_names(self) -> tuple[str, ...]:
        return tuple(k for k in self.compiled.out_info[1] if k != "live")
