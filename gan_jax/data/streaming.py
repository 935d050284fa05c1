"""Streaming input for datasets that do not fit on the device: grain over a tfds
array_record data source, sharded per process, reshuffled every epoch from a seed, decoded
on host threads and prefetched to the device. The iterator's state goes into checkpoints,
so a resumed run reads the same batches."""
import queue
import threading

import grain
import jax
import numpy as np

from gan_jax.data import sources


class Pipeline:
    """Batches of ``rows`` uint8 NHWC images for this process (its share of the global
    batch), as a grain iterator with ``get_state`` / ``set_state``; with ``label_key`` (of
    a dataset that has it), dicts {"image": images, "label": int32 labels}."""

    def __init__(self, name: str, split: str, data_dir: str | None, *, rows: int, seed: int,
                 shard_index: int = 0, shard_count: int = 1, image_key: str = "image",
                 label_key: str | None = None, resolution: int | None = None,
                 threads: int = 4):
        data_dir = sources.resolve_data_dir(data_dir)
        tfds_name = sources.resolve(name, data_dir)
        builder = sources.prepared_builder(tfds_name, data_dir)
        if split not in builder.info.splits:
            raise sources.DatasetError(f"Dataset {name!r} has no split {split!r}; it has "
                                       f"{sorted(builder.info.splits)}.")
        source = builder.as_data_source(split=split)
        # Each process reads its own slice, so an epoch shows every example once in all.
        ds = grain.MapDataset.source(source)[shard_index::shard_count]
        if len(ds) < rows:
            raise sources.DatasetError(f"Shard {shard_index} of {shard_count} of {name!r} has "
                                       f"{len(ds)} examples, fewer than one batch ({rows}).")
        self.examples_per_shard = len(ds)

        features = builder.info.features
        self.labelled = bool(label_key) and label_key in features
        # From the dataset's metadata; None without labels.
        self.num_classes = getattr(features[label_key], "num_classes", None) if self.labelled \
            else None

        def to_example(example):
            image = np.asarray(example[image_key])
            image = image[..., None] if image.ndim == 2 else image
            if resolution and image.shape[:2] != (resolution, resolution):
                image = sources.center_crop_resize(image[None], resolution)[0]
            image = image.astype(np.uint8)
            if not self.labelled:
                return image
            return {"image": image, "label": np.int32(example[label_key])}

        ds = ds.shuffle(seed=seed).repeat().map(to_example).batch(rows, drop_remainder=True)
        self._iter = iter(ds.to_iter_dataset(grain.ReadOptions(num_threads=threads,
                                                                prefetch_buffer_size=2 * threads)))

    def get_state(self) -> dict:
        return self._iter.get_state()

    def set_state(self, state: dict) -> None:
        self._iter.set_state(state)

    def __next__(self) -> np.ndarray:
        return next(self._iter)


class DevicePrefetcher:
    """A thread that stacks ``k`` host batches, puts them on the device with ``put`` and
    keeps ``depth`` of them ready. Each item carries the pipeline state from before its
    first batch: the position to save in a checkpoint taken before that item is used."""

    def __init__(self, pipeline: Pipeline, k: int, put, depth: int = 2):
        self._pipeline, self._k, self._put = pipeline, k, put
        self._queue = queue.Queue(maxsize=depth)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self):
        try:
            while not self._stop.is_set():
                state = self._pipeline.get_state()
                batches = [next(self._pipeline) for _ in range(self._k)]
                host = jax.tree.map(lambda *xs: np.stack(xs), *batches)
                item = (state, self._put(host))
                while not self._stop.is_set():
                    try:
                        self._queue.put(item, timeout=0.1)
                        break
                    except queue.Full:
                        pass
        except Exception as e:  # Surface input errors in the training thread.
            self._queue.put(e)

    def next(self):
        """(pipeline state before this item, device batches [k, rows, ...]: an array or a
        dict of arrays)."""
        item = self._queue.get()
        if isinstance(item, Exception):
            raise item
        return item

    def close(self) -> None:
        self._stop.set()
        self._thread.join(timeout=10)


def measure(name: str, split: str = "train", data_dir: str | None = None, *, rows: int = 128,
            threads: int = 4, batches: int = 200, warmup: int = 20) -> float:
    """Images per second of the pipeline alone (host batches, no device transfer)."""
    import time
    pipeline = Pipeline(name, split, data_dir, rows=rows, seed=0, threads=threads)
    for _ in range(warmup):
        next(pipeline)
    t = time.perf_counter()
    for _ in range(batches):
        next(pipeline)
    return batches * rows / (time.perf_counter() - t)
