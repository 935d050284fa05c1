"""Drawing images in chunks: every generator call gets the same number of latents."""
import jax
import jax.numpy as jnp
import numpy as np

from gan_jax import sampling
from gan_jax.models import dcgan


def test_in_chunks_keeps_order_and_tops_up_the_last_chunk():
    sizes = []

    def draw(z):
        sizes.append(len(z))
        return 2.0 * z

    z = sampling.latents(0, 21, 3)
    got = jnp.concatenate(list(sampling.in_chunks(draw, z, 8)))
    np.testing.assert_array_equal(got, 2.0 * z)
    assert sizes == [8, 8, 8]  # 21 = 8 + 8 + 5, the last topped up with 3 of the first.
    sizes.clear()
    assert len(jnp.concatenate(list(sampling.in_chunks(draw, z[:5], 8)))) == 5
    assert sizes == [5]


def test_no_ema_image_is_normalised_by_a_leftover_batch():
    # EMA draws of a BatchNorm generator use the batch's statistics: the 17th image, drawn
    # alone, would be normalised by itself; topped up, it is drawn with 7 others.
    G = dcgan.Generator(resolution=28, width=8, channels=1, z_dim=16)
    variables = G.init(jax.random.PRNGKey(0), jnp.zeros((2, 16)), train=False)
    g_vars = {"batch_stats": variables["batch_stats"]}
    draw = jax.jit(lambda z: sampling.generate(G, variables["params"], g_vars, z,
                                               batch_stats=True))
    z = sampling.latents(1, 17, 16)
    last = list(sampling.in_chunks(draw, z, 8))[-1]
    assert last.shape == (1, 28, 28, 1)
    np.testing.assert_allclose(last, draw(jnp.concatenate([z[16:], z[:7]]))[:1], atol=1e-6)
    alone = draw(z[16:])
    assert np.abs(alone - last).max() > 1e-2
