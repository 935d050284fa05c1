"""Pure GAN train steps: ``(state, batch) -> (state, metrics)``.

Nothing here does I/O or holds state; wrap the result in ``jax.jit(step, donate_argnums=0)``,
``scan`` it for K steps per dispatch, or shard it. The batch holds ``n_dis * B`` real images
(uint8 in [0, 255] or float in [-1, 1]), as an array or as a dict {"image", "label"};
D update i uses rows i, i + n_dis, ... so a batch split across devices along its first axis
splits every D update evenly too.

Class-conditional G and D (``num_classes > 0``) get ``y=``: D the real labels with the real
images; G, and D on G's images, classes drawn per step like the latents (uniform, or with
``class_probs``).
"""
import functools
from collections.abc import Mapping
from typing import Callable

import jax
import jax.numpy as jnp
import optax

from gan_jax import losses as losses_lib
from gan_jax.noise import per_example
from gan_jax.state import GANState

Metrics = dict[str, jax.Array]


def images_and_labels(batch):
    """(images, labels or None) of a batch: an image array, or a dict with tfds' names
    {"image": ..., "label": ...}."""
    if isinstance(batch, Mapping):
        return batch["image"], batch.get("label")
    return batch, None


def to_float_images(x_BHWC):
    """uint8 [0, 255] -> float32 [-1, 1]; float input is assumed to be in [-1, 1] already."""
    if jnp.issubdtype(x_BHWC.dtype, jnp.integer):
        return x_BHWC.astype(jnp.float32) / 127.5 - 1.0
    return x_BHWC.astype(jnp.float32)


def apply_model(module, params, variables, x, train: bool, **kwargs):
    """Runs a module and returns (output, updated non-param collections)."""
    if not variables or not train:
        return module.apply({"params": params, **variables}, x, train=train, **kwargs), variables
    out, new_vars = module.apply({"params": params, **variables}, x, train=True,
                                 mutable=list(variables), **kwargs)
    return out, dict(new_vars)


def _mean_prob(logits):
    return jnp.mean(jax.nn.sigmoid(logits.astype(jnp.float32)))


def _normal(key, shape, axis_name, sharding=None):
    """Gaussian noise; under ``pmap`` each device takes its slice of the global draw, so the
    devices together see exactly what one device would on the whole batch. ``sharding``
    (under ``jit`` over a mesh) lays the draw out like the real batch; the numbers do not
    depend on it (JAX's partitionable threefry)."""
    z = per_example(jax.random.normal, key, shape, axis_name=axis_name)
    return z if sharding is None else jax.lax.with_sharding_constraint(z, sharding)


def _on_axis(fn, axis_name):
    """``fn(..., key)`` (an augmentation or a penalty) as the step calls it: under ``pmap``
    with ``axis_name=``, so it draws its slice of the global batch's numbers
    (``noise.per_example``) and the devices together train as one would."""
    if fn is None or axis_name is None:
        return fn
    return functools.partial(fn, axis_name=axis_name)


def _y(labels) -> dict:
    """The keyword that passes classes to a conditional model (none to another)."""
    return {} if labels is None else {"y": labels}


def fake_labels(key, n: int, num_classes: int, class_probs=None, axis_name=None,
                sharding=None):
    """Classes for a fake batch of ``n``: uniform over ``num_classes``, or drawn with
    ``class_probs`` (e.g. the training data's frequencies); ``axis_name`` and ``sharding``
    as for the latents (``_normal``). None for an unconditional G."""
    if not num_classes:
        return None
    if class_probs is None:
        sample = lambda k, shape: jax.random.randint(k, shape, 0, num_classes)
    else:
        logits = jnp.log(jnp.asarray(class_probs, jnp.float32))
        sample = lambda k, shape: jax.random.categorical(k, logits, shape=shape)
    y = per_example(sample, key, (n,), axis_name=axis_name).astype(jnp.int32)
    return y if sharding is None else jax.lax.with_sharding_constraint(y, sharding)


def _latents(key, n, G, class_probs, axis_name, sharding):
    """G's inputs for a fake batch: (z, classes or None), both from ``key``."""
    z = _normal(key, (n, G.z_dim), axis_name, sharding)
    y = fake_labels(jax.random.fold_in(key, 1), n, getattr(G, "num_classes", 0), class_probs,
                    axis_name, sharding)
    return z, y


def _pmean(tree, axis_name):
    return tree if axis_name is None else jax.lax.pmean(tree, axis_name)


def d_update(state: GANState, real_BHWC, key, *, G, D, loss, d_penalty=None, augment=None,
             axis_name=None, fake=None, z_sharding=None, labels=None, fake_y=None,
             class_probs=None):
    """One optimizer step of D on a real batch and a fresh fake batch of the same size.
    ``augment(x, key)`` (e.g. DiffAugment) is applied to real and fake before D; under
    ``pmap`` pass the ``axis_name`` so gradients and metrics are averaged over devices.
    ``fake``: a batch G already drew, of classes ``fake_y`` (then ``state.g_vars`` must
    already hold its update). ``z_sharding``: see ``_normal``. ``labels``: the real
    images' classes, for a conditional D; the penalty's D sees them too."""
    z_key, pen_key, aug_key = jax.random.split(key, 3)
    augment, d_penalty = _on_axis(augment, axis_name), _on_axis(d_penalty, axis_name)
    if fake is None:
        z, fake_y = _latents(z_key, real_BHWC.shape[0], G, class_probs, axis_name, z_sharding)
        fake, g_vars = apply_model(G, state.g_params, state.g_vars, z, train=True, **_y(fake_y))
    else:
        g_vars = state.g_vars
    fake = jax.lax.stop_gradient(fake)
    if augment is not None:
        real_key, fake_key = jax.random.split(aug_key)
        real_BHWC, fake = augment(real_BHWC, real_key), augment(fake, fake_key)

    def loss_fn(d_params):
        real_logits, d_vars = apply_model(D, d_params, state.d_vars, real_BHWC, train=True,
                                          **_y(labels))
        fake_logits, d_vars = apply_model(D, d_params, d_vars, fake, train=True, **_y(fake_y))
        value = loss.d(real_logits, fake_logits)
        aux = {"d_adv_loss": value, "d_real": _mean_prob(real_logits),
               "d_fake": _mean_prob(fake_logits),
               "real_logit": jnp.mean(real_logits.astype(jnp.float32)),
               "fake_logit": jnp.mean(fake_logits.astype(jnp.float32))}
        if d_penalty is not None:
            # D's statistics updates from the penalty's extra passes are dropped on purpose.
            d_fn = lambda x: apply_model(D, d_params, d_vars, x, train=True, **_y(labels))[0]
            pen = d_penalty(d_fn, real_BHWC, fake, pen_key)
            aux["d_penalty"] = pen
            value = value + pen
        return value, (aux, d_vars)

    (value, (aux, d_vars)), grads = jax.value_and_grad(loss_fn, has_aux=True)(state.d_params)
    grads, value, aux = _pmean((grads, value, aux), axis_name)
    updates, d_opt_state = state.d_tx.update(grads, state.d_opt_state, state.d_params)
    d_params = optax.apply_updates(state.d_params, updates)
    metrics = {"d_loss": value, "d_grad_norm": optax.tree.norm(grads), **aux}
    return state.replace(d_params=d_params, d_vars=d_vars, d_opt_state=d_opt_state,
                         g_vars=g_vars), metrics


def g_update(state: GANState, batch_size: int, key, *, G, D, loss, augment=None,
             axis_name=None, z_sharding=None, class_probs=None):
    """One optimizer step of G on a fresh latent batch (and classes), against the current D."""
    z_key, aug_key = jax.random.split(key)
    augment = _on_axis(augment, axis_name)
    z, y = _latents(z_key, batch_size, G, class_probs, axis_name, z_sharding)

    def loss_fn(g_params):
        fake, g_vars = apply_model(G, g_params, state.g_vars, z, train=True, **_y(y))
        if augment is not None:  # Differentiable, so G learns through the augmentation.
            fake = augment(fake, aug_key)
        fake_logits, d_vars = apply_model(D, state.d_params, state.d_vars, fake, train=True,
                                          **_y(y))
        return loss.g(fake_logits), (g_vars, d_vars)

    (value, (g_vars, d_vars)), grads = jax.value_and_grad(loss_fn, has_aux=True)(state.g_params)
    return _apply_g(state, grads, value, g_vars, d_vars, axis_name)


def g_update_from_fake(state: GANState, fake, g_vjp, key, *, D, loss, augment=None,
                       axis_name=None, fake_y=None):
    """G's step through a forward it already ran: D scores ``fake`` and the gradient goes
    back through ``g_vjp`` (from ``jax.vjp`` of G's forward), so G runs forward once per
    step, as PyTorch code that reuses the fake batch does."""
    _, aug_key = jax.random.split(key)
    augment = _on_axis(augment, axis_name)

    def loss_of_fake(x):
        if augment is not None:
            x = augment(x, aug_key)
        fake_logits, d_vars = apply_model(D, state.d_params, state.d_vars, x, train=True,
                                          **_y(fake_y))
        return loss.g(fake_logits), d_vars

    (value, d_vars), d_fake = jax.value_and_grad(loss_of_fake, has_aux=True)(fake)
    (grads,) = g_vjp(d_fake)
    return _apply_g(state, grads, value, state.g_vars, d_vars, axis_name)


def _apply_g(state, grads, value, g_vars, d_vars, axis_name):
    grads, value = _pmean((grads, value), axis_name)
    updates, g_opt_state = state.g_tx.update(grads, state.g_opt_state, state.g_params)
    g_params = optax.apply_updates(state.g_params, updates)
    metrics = {"g_loss": value, "g_grad_norm": optax.tree.norm(grads)}
    return state.replace(g_params=g_params, g_vars=g_vars, d_vars=d_vars,
                         g_opt_state=g_opt_state), metrics


def ema_update(ema, params, step, decay: float, start: int = 0):
    """EMA of params; before step ``start`` the EMA just copies the params."""
    d = jnp.where(step < start, 0.0, decay).astype(jnp.float32)
    return jax.tree.map(lambda e, p: (d * e + (1.0 - d) * p).astype(e.dtype), ema, params)


def make_train_step(G, D, *, loss="non_saturating", n_dis: int = 1, ema_decay: float = 0.999,
                    ema_start: int = 0, d_penalty: Callable | None = None,
                    augment: Callable | None = None, share_fake: bool = False,
                    axis_name: str | None = None, batch_sharding=None, class_probs=None):
    """Returns ``train_step(state, batch) -> (state, metrics)``: n_dis D updates, one G update,
    the EMA update, ``step += 1``. ``loss`` is a name or a ``losses.AdversarialLoss``;
    ``d_penalty(d_fn, real, fake, key) -> scalar`` is added to D's loss
    (``losses.penalty``); ``augment(x, key)`` transforms every image D sees
    (``gan_jax.data.augment``).

    ``share_fake`` (n_dis=1): G's update scores the fake batch of D's update, as the PyTorch
    DCGAN example does; G runs forward once per step and its gradient goes back through
    that forward's VJP.

    For ``jax.pmap`` pass ``axis_name`` (and build G and D with the same ``axis_name`` so
    BatchNorm uses the global batch): the batch is then this device's share, the noise is
    this device's slice of the global draw, gradients and metrics are averaged, and
    ``augment`` and ``d_penalty`` are called with ``axis_name=`` (gan_jax's own take it),
    so the devices together train exactly like one device on the whole batch.

    ``batch_sharding`` (for ``jax.jit`` over a mesh, e.g. ``parallel.batch_sharded(mesh)``):
    latent batches are laid out like the real one, so the devices split G's work as they
    split D's; without it XLA may run G on the whole batch on every device.

    Conditional G and D (``num_classes > 0``) need batches with labels; G's classes are
    uniform, or drawn with ``class_probs`` (a [num_classes] vector of frequencies)."""
    if n_dis < 1:
        raise ValueError(f"n_dis must be >= 1, got {n_dis}.")
    if share_fake and n_dis != 1:
        raise ValueError(f"share_fake reuses D's one fake batch for G, so it needs n_dis=1 "
                         f"(got {n_dis}).")
    loss = losses_lib.get(loss)
    conditional = getattr(G, "num_classes", 0) > 0
    d_step = functools.partial(d_update, G=G, D=D, loss=loss, d_penalty=d_penalty,
                               augment=augment, axis_name=axis_name, z_sharding=batch_sharding,
                               class_probs=class_probs)
    g_kw = dict(D=D, loss=loss, augment=augment, axis_name=axis_name)

    def train_step(state: GANState, batch) -> tuple[GANState, Metrics]:
        images, labels = images_and_labels(batch)
        if not conditional:
            labels = None  # Unread, so XLA drops the labels' gather.
        elif labels is None:
            raise ValueError("A conditional G and D need labels: pass batches as a dict "
                             "{'image': ..., 'label': ...}.")
        if images.shape[0] % n_dis:
            raise ValueError(f"The batch has {images.shape[0]} images, which n_dis={n_dis} D "
                             "updates cannot share evenly; pass n_dis * batch_size images.")
        real = to_float_images(images)
        b = real.shape[0] // n_dis
        key = jax.random.fold_in(state.rng, state.step)
        d_keys = jax.random.split(jax.random.fold_in(key, 0), n_dis)
        g_key = jax.random.fold_in(key, 1)
        if share_fake:
            # The z that d_update would draw from this key, drawn here so G can reuse it.
            z, y = _latents(jax.random.split(d_keys[0], 3)[0], b, G, class_probs, axis_name,
                            batch_sharding)
            forward = lambda p: apply_model(G, p, state.g_vars, z, train=True, **_y(y))
            fake, g_vjp, g_vars = jax.vjp(forward, state.g_params, has_aux=True)
            state, d_metrics = d_step(state.replace(g_vars=g_vars), real, d_keys[0], fake=fake,
                                      fake_y=y, labels=labels)
            state, g_metrics = g_update_from_fake(state, fake, g_vjp, g_key, fake_y=y, **g_kw)
        else:
            if n_dis == 1:
                state, d_metrics = d_step(state, real, d_keys[0], labels=labels)
            else:
                split = lambda a: jnp.swapaxes(a.reshape(b, n_dis, *a.shape[1:]), 0, 1)
                xs = (split(real), d_keys, None if labels is None else split(labels))
                # Packed as the K-step loop's are: one metrics write per D update, not one each.
                state, d_metrics = _scan(
                    lambda s, xk: d_step(s, xk[0], xk[1], labels=xk[2]), state, xs, n_dis, None)
                d_metrics = jax.tree.map(jnp.mean, d_metrics)
            state, g_metrics = g_update(state, b, g_key, G=G, z_sharding=batch_sharding,
                                        class_probs=class_probs, **g_kw)
        ema = ema_update(state.ema_params, state.g_params, state.step, ema_decay, ema_start)
        metrics = {**d_metrics, **g_metrics, "g_param_norm": optax.tree.norm(state.g_params),
                   "d_param_norm": optax.tree.norm(state.d_params)}
        metrics = {k: v.astype(jnp.float32) for k, v in metrics.items()}
        return state.replace(ema_params=ema, step=state.step + 1), metrics

    return train_step


def default_unroll(platform: str) -> bool:
    """Whether K steps are unrolled on a platform when ``unroll`` is None."""
    # XLA:CPU runs a convolution's kernel gradient about 15x slower inside a while loop than
    # outside one (1.2 s against 64 ms for ten 14x14x32 -> 7x7x64 steps at batch 64), so on
    # CPU the K steps are unrolled; elsewhere they stay a loop, which compiles once.
    return platform == "cpu"


def _unroll(unroll):
    return default_unroll(jax.default_backend()) if unroll is None else unroll


def _stack_one(out):
    state, metrics = out
    return state, jax.tree.map(lambda m: m[None], metrics)


def _scan(step, state, xs, num_steps, unroll):
    """``lax.scan`` that stores a step's metrics, when all are scalars of one dtype, as one
    vector: a loop writes each output per trip in its own kernel on GPU (10 per step for
    the default step's metrics), and one vector takes one."""
    packing = {}

    def body(s, x):
        s, metrics = step(s, x)
        leaves, packing["treedef"] = jax.tree.flatten(metrics)
        packing["on"] = len(leaves) > 1 and all(
            jnp.shape(m) == () and jnp.result_type(m) == jnp.result_type(leaves[0])
            for m in leaves)
        return s, jnp.stack(leaves) if packing["on"] else metrics

    state, metrics = jax.lax.scan(body, state, xs, length=num_steps, unroll=_unroll(unroll))
    if packing["on"]:
        metrics = jax.tree.unflatten(packing["treedef"], list(metrics.T))
    return state, metrics


def scan(step, num_steps: int, unroll: bool | int | None = None):
    """K steps per dispatch over stacked batches: ``(state, batches_K) -> (state, metrics_K)``."""
    def multi_step(state, batches):
        if num_steps == 1:  # No loop at all: even a one-trip loop is slow on XLA:CPU.
            return _stack_one(step(state, batches[0]))
        return _scan(step, state, batches, num_steps, unroll)
    return multi_step


def repeat(step, num_steps: int, unroll: bool | int | None = None):
    """K steps per dispatch of a step that draws its own batch: ``step(state, *args)``, e.g.
    from a device-resident dataset passed as ``args``. Returns metrics stacked over K."""
    def multi_step(state, *args):
        if num_steps == 1:
            return _stack_one(step(state, *args))
        return _scan(lambda s, _: step(s, *args), state, None, num_steps, unroll)
    return multi_step


def jit(step):
    """``jax.jit`` with the state's buffers donated, as the trainer uses it."""
    return jax.jit(step, donate_argnums=0)
