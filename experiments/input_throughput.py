"""Images/s of the streaming input pipeline alone:

  python -m experiments.input_throughput --dataset=mnist --rows=128 --threads=1,2,4
"""
from absl import app, flags

from experiments import cli
from gan_jax.data import streaming

_DATASET = flags.DEFINE_string("dataset", "mnist", "tfds dataset name.")
_SPLIT = flags.DEFINE_string("split", "train", "Split.")
_DATA_DIR = flags.DEFINE_string("data_dir", None, "tfds data dir.")
_ROWS = flags.DEFINE_integer("rows", 128, "Images per batch.")
_THREADS = flags.DEFINE_list("threads", ["1", "2", "4"], "Decode thread counts to try.")
_BATCHES = flags.DEFINE_integer("batches", 200, "Batches timed.")


def main(argv):
    with cli.script(argv):
        for t in _THREADS.value:
            rate = streaming.measure(_DATASET.value, _SPLIT.value, _DATA_DIR.value,
                                     rows=_ROWS.value, threads=int(t), batches=_BATCHES.value)
            print(f"threads={t}: {rate:,.0f} img/s")


if __name__ == "__main__":
    app.run(main)
