"""Time per step of N runs in one program against one run, the runs axis of the benchmark:

  python -m experiments.benchmark_runs --models=mlp,dcgan28 --runs=1,4,8 --out=runs_bench.json

For each model (the seed text's MLP GAN at batch 32; the MNIST DCGAN of the README's main
job, width 32, batch 64), one plain run, then N runs stacked in each form (vmap, and on a
CPU also loop and map), K=10 steps per dispatch over one batch all runs share. Prints a Markdown
table (ms per run-step over one run's ms per step: below 1x, N runs in one program beat N
separate runs) and writes the rows to --out. On a GPU add 16 to --runs.
"""
import json

import jax
from absl import flags

from experiments import cli
from gan_jax.errors import ConfigError
from gan_jax.files import atomic_write_bytes
from gan_jax.perf import runs_benchmark

_MODELS = flags.DEFINE_list("models", ["mlp", "dcgan28"], "Models to time.")
_RUNS = flags.DEFINE_list("runs", ["1", "4", "8"], "Numbers of runs in one program.")
_FORMS = flags.DEFINE_list("forms", [], "vmap, loop, map; default all on CPU, vmap elsewhere.")
_K = flags.DEFINE_integer("steps_per_dispatch", 10, "Steps per dispatch (lax.scan).")
_OUT = flags.DEFINE_string("out", "", "JSON file for the rows.")


def main(argv):
    with cli.script(argv):
        bad = [m for m in _MODELS.value if m not in runs_benchmark.MODELS]
        if bad:
            raise ConfigError(f"Unknown --models {bad}; choose from "
                              f"{sorted(runs_benchmark.MODELS)}.")
        try:
            counts = [int(n) for n in _RUNS.value]
        except ValueError:
            raise ConfigError(f"--runs takes whole numbers, got {_RUNS.value}.") from None
        forms = _FORMS.value or runs_benchmark.forms_for(jax.default_backend())
        rows = []
        for model in _MODELS.value:
            specs = [(None, "single")] + [(n, f) for n in counts for f in forms]
            for row in runs_benchmark.time_runs(model, specs, k=_K.value):
                rows.append(row)
                print(json.dumps(row), flush=True)
        if _OUT.value:
            atomic_write_bytes(_OUT.value, json.dumps(rows, indent=1).encode())
    print(runs_benchmark.runs_table(rows))


if __name__ == "__main__":
    cli.run(main)
