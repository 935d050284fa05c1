import os
import pathlib
import shutil
import tempfile

# Tests are dominated by XLA:CPU compile time, not run time: compile with LLVM's cheapest
# pipeline (about 2-5x faster here; same HLO, so the same program), and share compiled
# programs between tests and the subprocesses they start through a persistent cache. (At
# level 1 the trainer tests run 10% faster and the step tests compile 14% slower: no gain.)
# An XLA_FLAGS that sets the level itself wins.
if "xla_backend_optimization_level" not in os.environ.get("XLA_FLAGS", ""):
    os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "")
                               + " --xla_backend_optimization_level=0").strip()
_OWN_CACHE = None  # Removed when this process's session ends (it was 46 MB a run, left in /tmp).
if "JAX_COMPILATION_CACHE_DIR" not in os.environ:
    _OWN_CACHE = tempfile.mkdtemp(prefix="gan_jax_test_xla_cache_")
    os.environ["JAX_COMPILATION_CACHE_DIR"] = _OWN_CACHE
os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS", "0")
os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES", "0")
# Four fake CPU devices stand in for GPUs: every trainer test runs the multi-device path.
os.environ["JAX_NUM_CPU_DEVICES"] = "4"

import pytest  # noqa: E402


def pytest_unconfigure(config):
    if _OWN_CACHE:
        shutil.rmtree(_OWN_CACHE, ignore_errors=True)


@pytest.fixture(scope="session")
def data_dir(tmp_path_factory) -> str:
    """A tfds data dir for the session; MNIST is written into it on first use."""
    return str(tmp_path_factory.mktemp("tfds"))


@pytest.fixture(scope="session")
def mnist_dir(data_dir) -> str:
    from gan_jax.data import mnist_offline
    mnist_offline.prepare(data_dir)
    return data_dir


@pytest.fixture
def repo_root() -> pathlib.Path:
    return pathlib.Path(__file__).resolve().parents[1]


@pytest.fixture(scope="session")
def mnist_classifier(mnist_dir) -> dict:
    """The cached MNIST classifier's metadata, trained first if this machine has none (about
    a minute). Trained in a subprocess without the tests' low LLVM optimisation level, which
    makes the training itself half again as slow."""
    import json
    import subprocess
    import sys

    flags = os.environ["XLA_FLAGS"].replace("--xla_backend_optimization_level=0", "").strip()
    env = {**os.environ, "TFDS_DATA_DIR": mnist_dir, "XLA_FLAGS": flags}
    env.pop("JAX_NUM_CPU_DEVICES", None)  # One device, as in a normal run.
    proc = subprocess.run([sys.executable, "-m", "gan_jax.eval.mnist_classifier"], env=env,
                          capture_output=True, text=True, timeout=900,
                          cwd=pathlib.Path(__file__).resolve().parents[1])
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads(proc.stdout.strip().splitlines()[-1])


@pytest.fixture
def private_cache(mnist_classifier, tmp_path, monkeypatch) -> pathlib.Path:
    """A gan_jax cache of the test's own (XDG_CACHE_HOME) holding a copy of the trained
    classifier, so the reference statistics a test computes stay out of the user's cache."""
    import shutil

    from gan_jax.eval import mnist_classifier as mc
    classifier = mc.cache_path()
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    mc.cache_path().parent.mkdir(parents=True)
    shutil.copy(classifier, mc.cache_path())
    return tmp_path / "cache" / "gan_jax"
