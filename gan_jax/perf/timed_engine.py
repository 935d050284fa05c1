"""The trainer's Engine as the benchmark runs it: the same programs, with the ablations that
plug in from outside the step, and what the benchmark reads off a compiled program."""
import jax
import jax.numpy as jnp

from gan_jax import parallel
from gan_jax.data import device
from gan_jax.errors import ConfigError
from gan_jax.trainer import engine as engine_lib

# The norms the train step always returns; norm_metrics=0 drops them.
NORMS = ("d_grad_norm", "g_grad_norm", "g_param_norm", "d_param_norm")


def without_norms(train_step):
    """``train_step`` with the four norms dropped from its metrics. Nothing reads them then,
    so XLA removes their reductions from the compiled program: what is left is the same
    update of the state."""
    def step(state, batch):
        state, metrics = train_step(state, batch)
        return state, {k: v for k, v in metrics.items() if k not in NORMS}
    return step


class TimedEngine(engine_lib.Engine):
    """``Engine`` with the benchmark's ablations: ``donate``, ``unroll`` and ``data_order``
    as the Engine's attributes; ``shard_latents=False``: the latent draw's layout left to
    XLA (several devices only); ``norm_metrics=False``: ``without_norms``. The other
    arguments are Engine's (``mesh`` may hold compile-only devices: ``compile_abstract``)."""

    def __init__(self, config, *, donate: bool = True, unroll: bool | None = None,
                 data_order: str = "shuffled", shard_latents: bool = True,
                 norm_metrics: bool = True, **engine_kwargs):
        self.donate, self.unroll, self.data_order = donate, unroll, data_order
        self.shard_latents, self.norm_metrics = shard_latents, norm_metrics
        super().__init__(config, **engine_kwargs)

    def make_step(self, G, D):
        if self.shard_latents or self.pmap:
            step = super().make_step(G, D)
        else:
            step = engine_lib.make_step(self.config, G, D, batch_sharding=None)
        return step if self.norm_metrics else without_norms(step)

    def compile_abstract(self):
        """Compiles the K-step program (jit over the mesh, device-resident data) from
        shapes alone: nothing is placed on the devices, so they may be compile-only ones
        (a GPU's topology on a machine without one). Then only ``hlo_text``,
        ``cost_analysis``, ``program_bytes`` and ``metric_names`` work."""
        if self.pmap or self.streaming:
            raise ConfigError("compile_abstract compiles the jit program with device-resident "
                              "data; set parallel.mode='jit' and dataset.pipeline='device'.")
        rep = parallel.replicated(self.mesh)
        state = jax.tree.map(lambda s: jax.ShapeDtypeStruct(s.shape, s.dtype, sharding=rep),
                             self.abstract_state())
        n = device.kept_size(device.rows_of(self._data_host), self.shards)
        images = jax.ShapeDtypeStruct((n, *self.image_shape), jnp.uint8,
                                      sharding=parallel.batch_sharded(self.mesh))
        self.compiled = self._data_program().lower(state, images).compile()

    def hlo_text(self) -> str:
        """The compiled K-step program as optimized HLO (what a profile's op names refer to)."""
        return self.compiled.as_text()

    def cost_analysis(self) -> dict:
        """XLA's estimate for the compiled K-step program on one device ("flops", "bytes
        accessed", ...). GPU backends leave cuDNN convolutions out of "flops"."""
        return self.compiled.cost_analysis()

    def program_bytes(self) -> int | None:
        """Device memory the compiled K-step program needs on one device: its arguments
        (state, dataset), the outputs that do not reuse donated arguments, and scratch
        (XLA's buffer assignment; None where the backend does not say)."""
        m = self.compiled.memory_analysis()
        if m is None:
            return None
        return (m.argument_size_in_bytes + m.output_size_in_bytes - m.alias_size_in_bytes
                + m.temp_size_in_bytes)
