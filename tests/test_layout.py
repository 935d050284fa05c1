"""The architecture's arrows: the pure core, data/ and eval/ never import the trainer or the
benchmark's package, and the trainer never imports the benchmark's."""
import ast
import pathlib
import subprocess
import sys

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "gan_jax"


def _imports(path: pathlib.Path) -> set[str]:
    """Every gan_jax module ``path`` imports, at the top or inside a function."""
    names = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module:
            names |= {node.module} | {f"{node.module}.{a.name}" for a in node.names}
    return {n for n in names if n.split(".")[0] == "gan_jax"}


def _modules(exclude=()):
    for path in sorted(PACKAGE.rglob("*.py")):
        part = path.relative_to(PACKAGE).parts[0]
        if part not in exclude:
            yield path


def test_the_core_data_and_eval_import_neither_the_trainer_nor_perf():
    checked, bad = 0, []
    for path in _modules(exclude=("trainer", "perf")):
        checked += 1
        bad += [f"{path.relative_to(ROOT)}: {name}" for name in sorted(_imports(path))
                if name.startswith(("gan_jax.trainer", "gan_jax.perf"))]
    assert checked >= 30, checked  # The walk still finds the package.
    assert not bad, "imports against the architecture:\n" + "\n".join(bad)


def test_the_trainer_does_not_import_perf():
    bad = [f"{p.relative_to(ROOT)}: {n}" for p in (PACKAGE / "trainer").glob("*.py")
           for n in _imports(p) if n.startswith("gan_jax.perf")]
    assert not bad, bad


def test_the_import_scanner_sees_imports_inside_functions(tmp_path):
    # Guard on the scanner: a lazy import in a function body is an import too.
    f = tmp_path / "m.py"
    f.write_text("def f():\n    from gan_jax.trainer import loop\n    import gan_jax.perf.hlo\n")
    assert _imports(f) >= {"gan_jax.trainer", "gan_jax.trainer.loop", "gan_jax.perf.hlo"}


@pytest.mark.parametrize("module", ["gan_jax.steps", "gan_jax", "gan_jax.eval",
                                    "gan_jax.data.device"])
def test_importing_the_core_loads_no_trainer_or_perf_module(module):
    code = (f"import sys, {module}\n"
            "print(sorted(m for m in sys.modules if m.startswith('gan_jax')))\n"
            "print(sorted(m for m in sys.modules if m.startswith(('gan_jax.trainer', "
            "'gan_jax.perf'))))")
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True,
                         text=True, timeout=120, check=True).stdout.splitlines()
    assert module in out[0], out  # It did import.
    assert out[1] == "[]", out


def test_nothing_in_the_core_reads_a_functions_signature():
    # Pass what a function needs explicitly (the pmap axis to augment and d_penalty).
    bad = [str(p.relative_to(ROOT)) for p in _modules(exclude=("trainer", "perf"))
           if "inspect" in {n.split(".")[0] for n in _stdlib_imports(p)}]
    assert not bad, bad


def _stdlib_imports(path):
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            yield from (a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            yield node.module
