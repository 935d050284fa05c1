"""Small LeNet-style classifiers of MNIST and Fashion-MNIST that gan_jax trains itself,
deterministically, and caches on disk. Their penultimate features (256-d) and logits give
FID, KID and IS on their dataset, as TF-GAN's mnist_frechet_distance and mnist_score do with
their classifier.

The cache key hashes this file's source and the identity of the data (the checksums the
offline copy is verified against and its tfds version), so editing the model or its
training, or changing the data, trains a new classifier; the weights' own sha256 goes into
every evaluation's provenance.
"""
import dataclasses
import hashlib
import json
import pathlib
import sys
import time

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import traverse_util

from gan_jax import files
from gan_jax.errors import GanJaxError

FEATURE_DIM, NUM_CLASSES, WIDTHS = 256, 10, (32, 64)
EPOCHS, BATCH, LEARNING_RATE, SEED = 3, 128, 3e-3, 0
MIN_ACCURACY = 0.99


class ClassifierError(GanJaxError):
    pass


@dataclasses.dataclass(frozen=True)
class Recipe:
    """What one dataset's classifier is: the extractor's name is the dataset's."""
    title: str  # For messages.
    widths: tuple = WIDTHS
    first_convs: int = 1  # Convolutions at 14x14, before the first pooling.
    pool_last: bool = True  # Max-pool 7x7 to 4x4 before the dense layers.
    flip: bool = False  # Train on random left-right mirror images too.
    epochs: int = EPOCHS
    min_accuracy: float = MIN_ACCURACY


# Fashion-MNIST: two convolutions at 14x14, no last pooling (the dense layer sees 7x7x64:
# the finer textures that tell shirts from coats and pullovers survive), mirror images and
# 10 epochs: 92.6% test accuracy in 2.5 minutes on two CPU cores. MNIST's recipe reaches
# 90.3%; without the last pooling 91.9% (6 epochs); adding 8 epochs, width (48, 96),
# dropout, BatchNorm, weight decay or label smoothing gave 90.9-92.1%.
RECIPES = {"mnist": Recipe("MNIST"),
           "fashion_mnist": Recipe("Fashion-MNIST", first_convs=2, pool_last=False, flip=True,
                                   epochs=10, min_accuracy=0.92)}


def recipe(dataset: str) -> Recipe:
    if dataset not in RECIPES:
        raise ClassifierError(f"gan_jax has no classifier of {dataset!r}; it has "
                              f"{sorted(RECIPES)}.")
    return RECIPES[dataset]


def _offline(dataset: str):
    from gan_jax.data import fashion_mnist_offline, mnist_offline
    recipe(dataset)
    return {"mnist": mnist_offline, "fashion_mnist": fashion_mnist_offline}[dataset]


def _max_pool_2x2(x_NHWC):
    # By reshape: XLA:CPU's max-pool gradient (select-and-scatter) is several times slower.
    n, h, w, c = x_NHWC.shape
    if h % 2 or w % 2:  # Zero padding is exact here: the inputs are ReLU outputs.
        x_NHWC = jnp.pad(x_NHWC, ((0, 0), (0, h % 2), (0, w % 2), (0, 0)))
        n, h, w, c = x_NHWC.shape
    return x_NHWC.reshape(n, h // 2, 2, w // 2, 2, c).max(axis=(2, 4))


class LeNet(nn.Module):
    """(features [N, 256], logits [N, 10]) of 28x28x1 images in [-1, 1]: conv 32, pool,
    conv 64, pool, dense 256, dense 10; or with ``first_convs`` convolutions before the
    first pooling and, unless ``pool_last``, none after the last convolution."""
    widths: tuple = WIDTHS
    first_convs: int = 1
    pool_last: bool = True

    @nn.compact
    def __call__(self, x_NHWC):
        n = len(x_NHWC)
        # Space-to-depth first (28x28x1 -> 14x14x4, so the first conv sees 6x6 pixels): a
        # conv with one input channel at 28x28 costs XLA:CPU as much as this whole network.
        x = x_NHWC.astype(jnp.float32).reshape(n, 14, 2, 14, 2, 1)
        x = x.transpose(0, 1, 3, 2, 4, 5).reshape(n, 14, 14, 4)
        for _ in range(self.first_convs):
            x = nn.relu(nn.Conv(self.widths[0], (3, 3))(x))
        x = _max_pool_2x2(x)  # 7x7
        x = nn.relu(nn.Conv(self.widths[1], (3, 3))(x))
        x = _max_pool_2x2(x) if self.pool_last else x  # 4x4
        features = nn.relu(nn.Dense(FEATURE_DIM)(x.reshape(n, -1)))
        return features, nn.Dense(NUM_CLASSES)(features)


def model(dataset: str = "mnist") -> LeNet:
    r = recipe(dataset)
    return LeNet(widths=r.widths, first_convs=r.first_convs, pool_last=r.pool_last)


def cache_key(source: bytes | None = None, dataset: str = "mnist") -> str:
    """A hash of ``source`` (this file's) and of the data's identity."""
    source = pathlib.Path(__file__).read_bytes() if source is None else source
    parts = [source, *(p.encode() for p in _offline(dataset).identity())]
    return hashlib.sha256(b"\0".join(parts)).hexdigest()[:16]


def cache_path(dataset: str = "mnist") -> pathlib.Path:
    return (files.cache_dir() / f"{dataset}_classifier"
            / f"lenet-{cache_key(dataset=dataset)}.npz")


def _to_float(images_uint8):
    return images_uint8.astype(np.float32) / 127.5 - 1.0


def accuracy(params, images_uint8, labels, batch: int = 1000, dataset: str = "mnist") -> float:
    net = model(dataset)
    fn = jax.jit(lambda p, x: net.apply({"params": p}, x)[1].argmax(-1))
    pred = np.concatenate([np.asarray(fn(params, _to_float(images_uint8[i:i + batch])))
                           for i in range(0, len(images_uint8), batch)])
    return float((pred == np.asarray(labels)).mean())


def train(train_x, train_y, *, epochs: int | None = None, seed: int = SEED, log=print,
          dataset: str = "mnist"):
    """Adam on a one-cycle schedule, batch 128, a fixed shuffle (and choice of mirrored
    images) per epoch: the same arrays give the same params on the same machine. Returns
    params."""
    r, net = recipe(dataset), model(dataset)
    epochs = r.epochs if epochs is None else epochs
    params = net.init(jax.random.PRNGKey(seed), jnp.zeros((1, 28, 28, 1)))["params"]
    steps_per_epoch = len(train_x) // BATCH
    tx = optax.adam(optax.cosine_onecycle_schedule(epochs * steps_per_epoch, LEARNING_RATE,
                                                   pct_start=0.2))
    opt_state = tx.init(params)
    x_all, y_all = jax.device_put(train_x), jax.device_put(np.asarray(train_y, np.int32))

    @jax.jit
    def step(params, opt_state, idx, flip):
        x, y = x_all[idx].astype(jnp.float32) / 127.5 - 1.0, y_all[idx]
        if flip is not None:  # Mirrored where flip is set.
            x = jnp.where(flip[:, None, None, None], x[:, :, ::-1], x)

        def loss_fn(p):
            logits = net.apply({"params": p}, x)[1]
            return optax.softmax_cross_entropy_with_integer_labels(logits, y).mean()
        loss, grads = jax.value_and_grad(loss_fn)(params)
        updates, opt_state = tx.update(grads, opt_state, params)
        return optax.apply_updates(params, updates), opt_state, loss

    rng, flip_rng = np.random.RandomState(seed), np.random.RandomState(seed + 1)
    for epoch in range(epochs):
        order = rng.permutation(len(train_x))[:steps_per_epoch * BATCH]
        order = jnp.asarray(order.reshape(steps_per_epoch, BATCH))
        flips = (jnp.asarray(flip_rng.rand(steps_per_epoch, BATCH) < 0.5) if r.flip
                 else [None] * steps_per_epoch)
        for i in range(steps_per_epoch):
            params, opt_state, loss = step(params, opt_state, order[i], flips[i])
        log(f"gan_jax: {r.title} classifier epoch {epoch + 1}/{epochs}, loss {float(loss):.4f}")
    return params


def _save(path: pathlib.Path, params, meta: dict) -> str:
    """Writes the weights and ``meta``; returns the file's sha256."""
    return files.write_npz(path, traverse_util.flatten_dict(jax.device_get(params), sep="/"),
                           meta)


def _read(path: pathlib.Path):
    flat, meta = files.read_npz(path)
    if meta is None:
        raise KeyError("__meta__")
    return traverse_util.unflatten_dict(flat, sep="/"), meta


def load_or_train(data_dir: str | None = None, log=print, dataset: str = "mnist"):
    """(params, meta) of ``dataset``'s cached classifier, training and caching it first if
    needed (on two CPU cores about half a minute for MNIST, two to three minutes for
    Fashion-MNIST). ``meta`` holds the test accuracy, the training time, the cache key, the
    data checksum and the sha256 of the weights file. Processes that start at once train it
    once: the others wait for it."""
    path = cache_path(dataset)
    found = _cached(path, log)
    if found:
        return found
    with files.exclusive(path.with_suffix(".lock")):  # Damage was reported above already.
        return _cached(path, lambda *a: None) or _train_and_save(path, data_dir, log)


def _cached(path, log):
    if path.is_file():
        try:
            params, meta = _read(path)
            meta["weights_sha256"] = files.file_sha256(path)
            return params, meta
        except (OSError, ValueError, KeyError) as e:  # A damaged cache: train again.
            log(f"gan_jax: ignoring unreadable classifier cache {path} ({e})")
    return None


def _train_and_save(path, data_dir, log):
    """Trains the classifier of the dataset whose cache entry ``path`` is."""
    from gan_jax.data import sources
    dataset = path.parent.name.removesuffix("_classifier")
    r = recipe(dataset)
    log(f"gan_jax: training the {r.title} classifier (cached at {path})")
    tr, te = sources.load(dataset, "train", data_dir), sources.load(dataset, "test", data_dir)
    digest = hashlib.sha256()
    for a in (tr.images, tr.labels, te.images, te.labels):
        digest.update(np.ascontiguousarray(a).tobytes())
    t = time.time()
    params = train(tr.images, tr.labels, log=log, dataset=dataset)
    train_s = time.time() - t
    acc = accuracy(params, te.images, te.labels, dataset=dataset)
    if acc < r.min_accuracy:
        raise ClassifierError(f"The {r.title} classifier reached only {acc:.4f} test accuracy "
                              f"(needs {r.min_accuracy}); its training recipe is broken.")
    meta = {"test_accuracy": acc, "train_seconds": round(train_s, 1),
            "key": cache_key(dataset=dataset), "data_sha256": digest.hexdigest(),
            "epochs": r.epochs, "backend": jax.default_backend(), "dataset": dataset}
    weights_sha256 = _save(path, params, meta)
    log(f"gan_jax: {r.title} classifier test accuracy {acc:.4f}, trained in {train_s:.0f}s")
    meta["weights_sha256"] = weights_sha256
    return jax.tree.map(np.asarray, params), meta


if __name__ == "__main__":
    # python -m gan_jax.eval.mnist_classifier [mnist|fashion_mnist]: train (or find) the
    # cached classifier and print its metadata as JSON.
    from gan_jax.errors import exit_on_error
    with exit_on_error():
        print(json.dumps(load_or_train(dataset=(sys.argv[1:] or ["mnist"])[0])[1],
                         sort_keys=True))
