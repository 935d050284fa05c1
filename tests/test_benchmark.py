import jax
import jax.numpy as jnp
import numpy as np

from gan_jax import benchmark, flops
from gan_jax.models import dcgan, layers


def test_flops_from_layer_shapes_match_a_hand_count():
    G, D = dcgan.Generator(resolution=64), dcgan.Discriminator(resolution=64)
    gv = jax.eval_shape(lambda: G.init(jax.random.PRNGKey(0), jnp.zeros((2, 100)), train=False))
    dv = jax.eval_shape(lambda: D.init(jax.random.PRNGKey(0), jnp.zeros((2, 64, 64, 3)),
                                       train=False))
    # G: dense 100 -> 4x4x512, then four 4x4 stride-2 transposed convs (4 live taps each).
    g_hand = 2 * 100 * 4 * 4 * 512 + sum(2 * s * s * cout * 4 * cin for s, cin, cout in
                                         ((8, 512, 256), (16, 256, 128), (32, 128, 64),
                                          (64, 64, 3)))
    d_hand = sum(2 * s * s * cout * 16 * cin for s, cin, cout in
                 ((32, 3, 64), (16, 64, 128), (8, 128, 256), (4, 256, 512))) + 2 * 4 * 4 * 512
    assert flops.count(lambda v, z: G.apply(v, z, train=False), gv,
                       jnp.zeros((1, 100))) == g_hand
    assert flops.count(lambda v, x: D.apply(v, x, train=False), dv,
                       jnp.zeros((1, 64, 64, 3))) == d_hand
    assert abs(g_hand / 1e9 - 0.21) < 0.01 and abs(d_hand / 1e9 - 0.21) < 0.01
    x, k = jnp.zeros((1, 7, 7, 8)), jnp.zeros((4, 4, 8, 4))
    assert flops.count(layers.upsample_phases, x, k) == flops.count(
        layers.upsample_conv_transpose, x, k)
    # A scan counts its body once per trip.
    scanned = lambda a: jax.lax.scan(lambda c, _: (c @ a, None), a, None, length=3)[0]
    assert flops.count(scanned, jnp.zeros((5, 5))) == 3 * 2 * 125


def test_benchmark_times_the_trainer_step_and_reports():
    row = benchmark.time_gan_jax("dcgan28", 8, "float32", 2, windows=1, window_steps=2,
                                 peak_flops=1e12)
    assert row["framework"] == "gan_jax" and row["batch"] == 8 and row["steps_per_dispatch"] == 2
    assert row["ms_per_step"] > 0 and np.isclose(row["img_per_s"], 8e3 / row["ms_per_step"])
    assert np.isclose(row["gflop_per_step"], benchmark.step_flops("dcgan28", 8) / 1e9)
    assert np.isfinite(row["d_loss"]) and np.isfinite(row["g_loss"])
    torch_row = dict(row, framework="pytorch", setting="eager", img_per_s=row["img_per_s"] / 2)
    text = benchmark.table([row, torch_row])
    assert "| gan_jax | jit K=2 | dcgan28 | 8 | float32 |" in text and "| 2.00x |" in text


def test_pytorch_reference_runs_the_same_model():
    torch = __import__("pytest").importorskip("torch", reason="PyTorch is an optional extra")
    from gan_jax import torch_reference
    G, D = torch_reference._nets(torch, 64, 3, 64)
    # The PyTorch DCGAN example's netG / netD sizes, as gan_jax's DCGAN-64 has.
    assert sum(p.numel() for p in G.parameters()) == 3_576_704
    assert sum(p.numel() for p in D.parameters()) == 2_765_568
    row = torch_reference.time_pytorch(28, 1, 8, 4, dtype="float32", windows=1,
                                       window_steps=1, device="cpu")
    assert row["framework"] == "pytorch" and row["ms_per_step"] > 0
    assert np.isfinite(row["d_loss"]) and np.isfinite(row["g_loss"])
