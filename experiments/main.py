"""Trains a GAN: python -m experiments.main --config=experiments/configs/<name>.py --workdir=DIR

Append ``:smoke`` to the config path for a run of seconds on a CPU; override any key with
``--config.<key>=<value>`` (an unknown key or a value of the wrong type is an error).
On several hosts run the same command on each, adding --coordinator_address=HOST:PORT
--num_processes=N --process_id=I (or rely on the cluster environment JAX detects).
"""
import sys

from absl import flags
from ml_collections import config_flags

from experiments import cli
from gan_jax import parallel
from gan_jax.trainer import train_and_evaluate

_DEFAULT_CONFIG = "experiments/configs/mnist_dcgan.py"
with cli.config_flag_errors("config", _DEFAULT_CONFIG):
    _CONFIG = config_flags.DEFINE_config_file("config", _DEFAULT_CONFIG,
                                              "Config file, optionally followed by :smoke.",
                                              lock_config=True)
_WORKDIR = flags.DEFINE_string("workdir", "runs/mnist_dcgan", "Directory for all run artefacts.")
_COORDINATOR = flags.DEFINE_string(
    "coordinator_address", "", "HOST:PORT of process 0, to run on several hosts (or set "
    "GAN_JAX_COORDINATOR; cluster environments JAX knows are detected without it).")
_NUM_PROCESSES = flags.DEFINE_integer("num_processes", 0, "Number of processes (hosts).")
_PROCESS_ID = flags.DEFINE_integer("process_id", -1, "This process's index.")


def main(argv):
    with cli.script(argv):
        parallel.initialize(_COORDINATOR.value, _NUM_PROCESSES.value, _PROCESS_ID.value)
        summary = train_and_evaluate(_CONFIG.value, _WORKDIR.value)
    if summary["preempted"] and parallel.is_writer():
        print("gan_jax: resume with: python -m experiments.main " + " ".join(sys.argv[1:]),
              flush=True)


if __name__ == "__main__":
    cli.run(main)
