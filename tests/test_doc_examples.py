"""The code in README.md and docs/ runs as written, and returns what the text says."""
import importlib
import json
import pathlib
import re

import jax
import jax.numpy as jnp
import numpy as np

from gan_jax import benchmark
from gan_jax import config as config_lib

ROOT = pathlib.Path(__file__).resolve().parents[1]
README = ROOT / "README.md"


def _docs():
    return [README, *sorted((ROOT / "docs").glob("*.md"))]


def _python_blocks(path):
    return re.findall(r"```python\n(.*?)```", path.read_text(), re.S)


def test_the_readme_step_example_runs_and_returns_the_metrics_it_lists():
    text = README.read_text()
    [code] = _python_blocks(README)
    # The example's only free name: a batch of images, uint8 as the README allows.
    scope = {"images_NHWC": np.random.default_rng(0).integers(0, 256, (4, 64, 64, 3),
                                                               dtype=np.uint8)}
    exec(compile(code, str(README), "exec"), scope)
    state, metrics = scope["state"], scope["metrics"]
    assert int(state.step) == 1
    listed = re.search(r"^- `metrics`: (.*?); all float32", text, re.S | re.M).group(1)
    assert sorted(metrics) == sorted(re.findall(r"`(\w+)`", listed))
    for name, value in metrics.items():
        assert value.dtype == jnp.float32 and np.isfinite(value), name


def test_the_evaluation_docs_own_loop_example_appends_its_records(mnist_dir, private_cache,
                                                                   tmp_path):
    doc = ROOT / "docs" / "evaluation.md"
    [code] = _python_blocks(doc)
    dataset = dict(config_lib.defaults().dataset.to_dict(), data_dir=mnist_dir)
    kernel = jax.random.normal(jax.random.PRNGKey(0), (100, 784)) / 10
    # Its free names: the run's config, a generator and where the loop is.
    scope = {"config_dict": {"dataset": dataset}, "workdir": tmp_path, "step": 300,
             "draw": jax.jit(lambda z: jnp.tanh(z @ kernel).reshape(-1, 28, 28, 1))}
    exec(compile(code, str(doc), "exec"), scope)
    lines = [json.loads(line) for line in (tmp_path / "eval.jsonl").read_text().splitlines()]
    assert [(r["metric"], r["step"]) for r in lines] == [("fid", 300), ("kid", 300),
                                                         ("is", 300)]
    assert lines[0]["fid"] > 0 and lines[0]["provenance"]["num_samples"] == 10_000


def test_every_config_key_the_docs_name_exists():
    names = set()
    for path in _docs():
        names |= set(re.findall(r"\bconfig\.([a-z_][\w.]*\w)", path.read_text()))
    names -= {"py", "json"}  # config.py, config.json: files
    assert len(names) >= 10, names  # the pattern still finds them
    missing = []
    for name in sorted(names):
        node = config_lib.defaults()
        for part in name.split("."):
            if part not in node:
                missing.append(name)
                break
            node = node[part]
    assert not missing, f"keys named in the docs but not in gan_jax/config.py: {missing}"


def test_every_flag_the_docs_name_is_defined_by_an_entry_point():
    source = "".join(p.read_text() for p in (*ROOT.glob("experiments/*.py"),
                                             *ROOT.glob("gan_jax/**/*.py")))
    defined = set(re.findall(r"DEFINE_\w+\(\s*\"(\w+)\"", source))
    named = set()
    for path in _docs():
        # Hyphenated ones are pip's (--no-deps) or absl's negations (--no-ema).
        named |= set(re.findall(r"(?<![\w-])--([a-z]\w*)(?![\w-])", path.read_text()))
    named = {n for n in named if not n.startswith("xla_")}  # XLA's own, in XLA_FLAGS
    assert len(named) >= 30 and "coordinator_address" in defined, (named, defined)
    assert not named - defined, f"flags the docs name that no entry point defines: " \
                                f"{sorted(named - defined)}"


def test_every_file_and_gan_jax_name_the_docs_point_to_exists():
    files, names = set(), set()
    for path in _docs():
        text = path.read_text()
        files |= set(re.findall(r"(?<![\w/.])((?:gan_jax|experiments|tests|docs)/[\w/.-]*\w)",
                                text))
        names |= set(re.findall(r"(?<![\w.])(gan_jax(?:\.\w+)+)", text))
    assert len(files) >= 20 and len(names) >= 10, (files, names)
    assert not [f for f in files if not (ROOT / f).exists()]
    unresolved = []
    for name in sorted(names):  # the longest importable module, then attributes
        parts = name.split(".")
        for i in range(len(parts), 0, -1):
            try:
                obj = importlib.import_module(".".join(parts[:i]))
            except ImportError:
                continue
            try:
                for attr in parts[i:]:
                    obj = getattr(obj, attr)
            except AttributeError:
                unresolved.append(name)
            break
    assert not unresolved, f"names the docs give that gan_jax does not have: {unresolved}"


def test_every_ablation_the_docs_run_parses():
    specs = set()
    for path in _docs():
        specs |= set(re.findall(r"--ablate=([\w=+.,-]+)", path.read_text()))
    specs = {s for s in specs if not s.startswith("xla=")}  # any XLA flags, in a new process
    assert len(specs) >= 8, specs
    for spec in sorted(specs):
        assert benchmark.parse_variant(spec), spec
