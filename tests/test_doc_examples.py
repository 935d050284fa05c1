"""The code in README.md and docs/ runs as written, and what the text names exists.

Every fenced block is ```python or ```bash, and each doc's blocks run in order, in a
temporary directory of their own (the working directory of the python blocks):

- python blocks are exec'd, each in a fresh namespace, with $TFDS_DATA_DIR the session's
  MNIST. The few names a block leaves to its reader come from ``_free_names`` (README: a
  batch of images; evaluation.md: a run's config, a generator, a workdir and a step).
- bash blocks: every command ``python -m experiments.<module> ...`` runs for real, in a
  subprocess (``tests.helpers.run_module``), at smoke scale. These substitutions make it so:

    --config=experiments/configs/X.py   ->  --config=experiments/configs/X.py:smoke
    an argument value runs/...          ->  <tmp>/runs/...
    --out=F, --npz=F, --src=F (relative) ->  <tmp>/F
    --num=N                             ->  --num=min(N, 1000)
    --config.num_steps=N                ->  --config.num_steps=N // 250
                                            (5,000 -> 20, the DCGAN smoke run's length)

  ``pip install ...`` is skipped (the install is this environment), and so is the README's
  ``python -m pytest -q -n 2`` (the suite itself). Any other command fails the test: a
  command that cannot run here (a download, a GPU script) belongs in prose, not in a block.
"""
import importlib
import json
import os
import pathlib
import re
import shlex

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from gan_jax.trainer import config as config_lib
from tests.helpers import run_module

ROOT = pathlib.Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
FENCE = re.compile(r"^```(\w*)\n(.*?)^```", re.S | re.M)


def _docs():
    return [README, *sorted((ROOT / "docs").glob("*.md"))]


def _blocks(path):
    return FENCE.findall(path.read_text())


def _name(path) -> str:
    return path.relative_to(ROOT).as_posix()


# -- running the blocks -------------------------------------------------------------------

def _commands(code: str):
    """The argv of each command of a bash block (lines joined at backslashes, split at &&)."""
    for line in code.replace("\\\n", " ").splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            yield from (shlex.split(part) for part in line.split(" && "))


def _at_smoke_scale(argv, tmp):
    """(module, args) of a ``python -m experiments.X`` command, with the substitutions of the
    module docstring."""
    assert argv[:2] == ["python", "-m"] and argv[2].startswith("experiments."), \
        f"a command that this test cannot run: {shlex.join(argv)}"
    args = []
    for arg in argv[3:]:
        flag, eq, value = arg.partition("=")
        if eq:
            if flag == "--config" and ":" not in value:
                value += ":smoke"
            elif flag == "--num":
                value = str(min(int(value), 1000))
            elif flag == "--config.num_steps":
                value = str(int(value) // 250)
            elif value.startswith("runs/") or (flag in ("--out", "--npz", "--src") and value
                                               and not os.path.isabs(value)):
                value = str(tmp / value)
        args.append(f"{flag}{eq}{value}")
    return argv[2], args


def _run_bash(doc: str, code: str, tmp, data_dir: str) -> int:
    ran = 0
    for argv in _commands(code):
        if argv[:2] == ["pip", "install"]:
            continue
        if argv[:3] == ["python", "-m", "pytest"]:
            assert doc == "README.md", f"{doc} runs the test suite: {shlex.join(argv)}"
            continue
        module, args = _at_smoke_scale(argv, tmp)
        proc = run_module(*args, module=module, data_dir=data_dir)
        assert proc.returncode == 0, (f"{doc}: {shlex.join(argv)}\n-> {module} {args}\n"
                                      f"{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}")
        ran += 1
    return ran


def _make_inputs(doc: str, tmp) -> None:
    """What a doc's commands take from their reader: the README's folder of images, 24
    PNGs in two class subfolders."""
    if doc == "README.md":
        from PIL import Image
        rng = np.random.default_rng(0)
        for i in range(24):
            folder = tmp / "my_images" / ("cats", "dogs")[i % 2]
            folder.mkdir(parents=True, exist_ok=True)
            pixels = rng.integers(0, 256, (40, 48, 3), dtype=np.uint8)
            Image.fromarray(pixels).save(folder / f"{i}.png")


def _free_names(doc: str, request, tmp_path) -> dict:
    """The names a doc's python blocks take from their reader."""
    if doc == "README.md":  # A batch of images, uint8 as the README allows.
        return {"images_NHWC": np.random.default_rng(0).integers(0, 256, (4, 64, 64, 3),
                                                                 dtype=np.uint8)}
    if doc == "docs/evaluation.md":  # The own-loop example: a run's config, a generator...
        request.getfixturevalue("private_cache")  # The MNIST classifier, in a cache of its own.
        dataset = dict(config_lib.defaults().dataset.to_dict(),
                       data_dir=request.getfixturevalue("mnist_dir"))
        kernel = jax.random.normal(jax.random.PRNGKey(0), (100, 784)) / 10
        (tmp_path / "own_loop").mkdir()
        return {"config_dict": {"dataset": dataset}, "workdir": tmp_path / "own_loop",
                "step": 300,
                "draw": jax.jit(lambda z: jnp.tanh(z @ kernel).reshape(-1, 28, 28, 1))}
    return {}


def _check_state_and_metrics(scope, where):
    if "state" in scope and "metrics" in scope:
        assert int(np.asarray(scope["state"].step).reshape(-1)[0]) >= 1, where
        for name, value in scope["metrics"].items():
            assert value.dtype == jnp.float32 and np.all(np.isfinite(value)), (where, name)


def _check_what_the_doc_says(doc, scopes, tmp):
    """What each doc's text says its blocks produce."""
    if doc == "README.md":
        [scope] = scopes
        assert int(scope["state"].step) == 1
        listed = re.search(r"^- `metrics`: (.*?); all float32", README.read_text(),
                           re.S | re.M).group(1)
        assert sorted(scope["metrics"]) == sorted(re.findall(r"`(\w+)`", listed))
        assert (tmp / "runs/mnist_sndcgan/samples/final.png").exists()
        # The folder import, then 20 steps on it.
        assert (tmp / "runs/my_images/samples/final.png").exists()
        assert json.loads((tmp / "runs/my_images/config.json").read_text())["dataset"][
            "name"] == "my_images"
    elif doc == "docs/training.md":  # The MLP smoke run (40 steps) extended to 160 steps.
        summary = json.loads((tmp / "runs/mnist_mlp/summary.json").read_text())
        assert (summary["steps"], summary["resumed_from"]) == (160, 40)
        assert json.loads((tmp / "runs/mnist_mlp/config.json").read_text())["num_steps"] == 160
        conditional, scope = scopes  # The conditional step, then the custom writer's run.
        assert conditional["images"].shape == (3, 28, 28, 1)
        assert int(conditional["s"].step) == 1 and "d_loss" in conditional["metrics"]
        assert scope["summary"]["steps"] == 40
    elif doc == "docs/checkpoints.md":
        assert (tmp / "grid.png").exists()
        with np.load(tmp / "samples.npz") as npz:
            assert npz["images"].shape == (1000, 28, 28, 1) and not bool(npz["ema"])
        [scope] = scopes
        assert scope["images"].shape == (16, 28, 28, 1) and scope["step"] == 20
    elif doc == "docs/evaluation.md":
        rows = [json.loads(s) for s in
                (tmp / "runs/mnist_dcgan/eval.jsonl").read_text().splitlines()]
        assert [r["metric"] for r in rows] == ["fid", "kid", "is", "pr", "dc"]
        lines = [json.loads(s) for s in
                 (tmp / "own_loop/eval.jsonl").read_text().splitlines()]
        assert [(r["metric"], r["step"]) for r in lines] == [("fid", 300), ("kid", 300),
                                                             ("is", 300)]
        assert lines[0]["fid"] > 0 and lines[0]["provenance"]["num_samples"] == 10_000


@pytest.mark.parametrize("doc", [_name(p) for p in _docs() if _blocks(p)])
def test_every_code_block_of_the_doc_runs(doc, request, tmp_path, monkeypatch):
    blocks = _blocks(ROOT / doc)
    assert {lang for lang, _ in blocks} <= {"python", "bash"}, \
        f"{doc}: a fenced block that is neither python nor bash: {[l for l, _ in blocks]}"
    data_dir = request.getfixturevalue("mnist_dir")
    monkeypatch.setenv("TFDS_DATA_DIR", data_dir)
    names = _free_names(doc, request, tmp_path)
    _make_inputs(doc, tmp_path)
    monkeypatch.chdir(tmp_path)
    scopes = []
    for i, (lang, code) in enumerate(blocks):
        where = f"{doc}, block {i + 1} ({lang})"
        if lang == "bash":
            _run_bash(doc, code, tmp_path, data_dir)
            continue
        scope = dict(names)
        exec(compile(code, where, "exec"), scope)
        _check_state_and_metrics(scope, where)
        scopes.append(scope)
    _check_what_the_doc_says(doc, scopes, tmp_path)


def test_every_fenced_block_is_python_or_bash():
    langs = {(_name(p), lang) for p in _docs() for lang, _ in _blocks(p)}
    assert {lang for _, lang in langs} == {"python", "bash"}, sorted(langs)
    # The README's two commands, verbatim, CI's (.ci/run) among them.
    bash = [code for lang, code in _blocks(README) if lang == "bash"]
    assert bash[:2] == [
        "pip install -e . && python -m experiments.main "
        "--config=experiments/configs/mnist_sndcgan.py --workdir=runs/mnist_sndcgan\n",
        'pip install -e ".[dev]" && python -m pytest -q -n 2\n']
    assert 'pip install -e ".[dev]" && python -m pytest -q -n 2' in (ROOT / ".ci/run").read_text()


def test_the_smoke_substitutions():
    tmp = pathlib.Path("/t")
    argv = shlex.split("python -m experiments.sample --workdir=runs/a --num=10000 "
                       "--out=grid.png --npz=/abs.npz --no-ema")
    assert _at_smoke_scale(argv, tmp) == ("experiments.sample", [
        "--workdir=/t/runs/a", "--num=1000", "--out=/t/grid.png", "--npz=/abs.npz", "--no-ema"])
    argv = shlex.split("python -m experiments.main --config=experiments/configs/x.py "
                       "--config.num_steps=10000 --workdir=runs/x")
    assert _at_smoke_scale(argv, tmp)[1] == ["--config=experiments/configs/x.py:smoke",
                                             "--config.num_steps=40", "--workdir=/t/runs/x"]
    with pytest.raises(AssertionError, match="cannot run"):
        _at_smoke_scale(["wget", "https://example.com/w.pth"], tmp)


# -- what the docs name exists ------------------------------------------------------------

def test_every_config_key_the_docs_name_exists():
    names = set()
    for path in _docs():
        names |= set(re.findall(r"\bconfig\.([a-z_][\w.]*\w)", path.read_text()))
    names -= {"py", "json"}  # config.py, config.json: files
    assert len(names) >= 30, names  # the pattern still finds them
    missing = []
    for name in sorted(names):
        node = config_lib.defaults()
        for part in name.split("."):
            if part not in node:
                missing.append(name)
                break
            node = node[part]
    assert not missing, f"keys named in the docs but not in gan_jax/trainer/config.py: {missing}"


def test_every_flag_the_docs_name_is_defined_by_an_entry_point():
    source = "".join(p.read_text() for p in (*ROOT.glob("experiments/*.py"),
                                             *ROOT.glob("gan_jax/**/*.py")))
    defined = set(re.findall(r"DEFINE_\w+\(\s*\"(\w+)\"", source))
    named = set()
    for path in _docs():
        # Hyphenated ones are pip's (--no-deps) or absl's negations (--no-ema).
        named |= set(re.findall(r"(?<![\w-])--([a-z]\w*)(?![\w-])", path.read_text()))
    named = {n for n in named if not n.startswith("xla_")}  # XLA's own, in XLA_FLAGS
    named -= {"logdir"}  # TensorBoard's own
    assert len(named) >= 30 and "coordinator_address" in defined, (named, defined)
    assert not named - defined, f"flags the docs name that no entry point defines: " \
                                f"{sorted(named - defined)}"


def test_every_file_link_and_gan_jax_name_the_docs_point_to_exists():
    files, names, links = set(), set(), set()
    for path in _docs():
        text = path.read_text()
        files |= set(re.findall(r"(?<![\w/.])((?:gan_jax|experiments|tests|docs)/[\w/.-]*\w)",
                                text))
        names |= set(re.findall(r"(?<![\w.])(gan_jax(?:\.\w+)+)", text))
        links |= {(path.parent / link).resolve() for link in
                  re.findall(r"\]\(([^)#:]+)\)", text)}  # relative Markdown links and images
    assert len(files) >= 20 and len(names) >= 20 and len(links) >= 5, (files, names, links)
    assert not [f for f in files if not (ROOT / f).exists()]
    assert not [link for link in links if not link.exists()]
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
    from gan_jax.perf import benchmark
    specs = set()
    for path in _docs():
        specs |= set(re.findall(r"--ablate=([\w=+.,-]+)", path.read_text()))
    specs = {s for s in specs if not s.startswith("xla=")}  # any XLA flags, in a new process
    assert len(specs) >= 4, specs
    for spec in sorted(specs):
        assert benchmark.parse_variant(spec), spec


# -- the repository stands alone -----------------------------------------------------------

def test_nothing_refers_to_a_file_outside_the_repository():
    # Written in two parts, so that this file does not match itself.
    outside = ["DESIGN" ".md", "../" "shared"]
    paths = [README, ROOT / "pyproject.toml", *(ROOT / "docs").rglob("*.md")]
    for folder in ("gan_jax", "experiments", "tests"):
        paths += [p for p in (ROOT / folder).rglob("*")
                  if p.is_file() and p.suffix in (".py", ".sh", ".md", ".textproto", ".toml")]
    assert len(paths) > 50
    found = [f"{_name(p)}: {s}" for p in paths for s in outside
             if s in p.read_text(errors="replace")]
    assert not found, found

