"""experiments.benchmark and experiments.eval_benchmark run as scripts, as the GPU run uses
them: tables and JSON, ablations and their combination, a failing setting, a stopped run,
the time budget, and the evaluation half without tfds or grain."""
import json
import os
import pathlib
import re
import subprocess
import sys
import time

import numpy as np

REPO = pathlib.Path(__file__).resolve().parents[1]


def test_benchmark_script_profiles_ablates_and_survives_a_failing_setting(tmp_path):
    out = tmp_path / "rows.json"
    proc = subprocess.run(
        [sys.executable, "-m", "experiments.benchmark", "--models=dcgan28", "--batch_sizes=8",
         "--dtypes=float32", "--steps_per_dispatch=1", "--torch=", "--windows=1",
         "--window_steps=1", "--matmul_peak=1e11", "--profile", "--ablate=donate=0",
         "--ablate=xla=--xla_cpu_enable_fast_math=false", "--ablate=xla=--xla_no_such_flag",
         "--combine", "--combine_min_gain=-1",  # every ablation counts as a winner
         f"--profile_dir={tmp_path / 'trace'}", f"--out={out}"],
        cwd=REPO, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    rows = json.loads(out.read_text())["rows"]
    fast_math = "XLA_FLAGS=--xla_cpu_enable_fast_math=false"
    assert [r["setting"] for r in rows] == [
        "jit", "jit donate=0", f"jit {fast_math}", f"jit donate=0 {fast_math}"]
    # The two winners joined, timed in a fresh process with the flag and the variant.
    assert rows[3]["variant"] == {"donate": False} and rows[3]["ablation"] == [
        "donate=0", fast_math]
    assert sorted(rows[3]["combination_of"]) == sorted(["donate=0", fast_math])
    assert f"| fastest combination: donate=0 {fast_math} |" in proc.stdout
    assert rows[0]["profile"]["kinds"] and not rows[1]["profile"]
    # The profile's time is kept apart: the budget does not charge it to unprofiled rows.
    assert rows[0]["wall_s"] > rows[0]["profile_s"] > 0 and rows[1]["profile_s"] == 0
    assert pathlib.Path(rows[0]["profile"]["trace"]).is_file()
    assert "# ablation xla=--xla_no_such_flag failed" in proc.stdout
    assert "What each choice of the default step buys" in proc.stdout
    assert "Where the time goes: dcgan28 batch 8 float32 jit" in proc.stdout
    assert json.loads(out.read_text())["meta"]["complete"]
    assert not pathlib.Path(f"{out}.partial").exists()
    # With --batch_sizes given, the preset's --ablate_batches=1024,128 is dropped, not refused.
    bad = subprocess.run([sys.executable, "-m", "experiments.benchmark", "--preset=h200",
                          "--batch_sizes=8", "--models=dcgan65", f"--out={tmp_path / 'none.json'}"],
                         cwd=REPO, capture_output=True, text=True, timeout=120)
    assert bad.returncode == 1 and "Unknown --models entry 'dcgan65'" in bad.stderr
    bad = subprocess.run([sys.executable, "-m", "experiments.benchmark", "--batch_sizes=8",
                          "--ablate_batches=16", f"--out={tmp_path / 'none.json'}"],
                         cwd=REPO, capture_output=True, text=True, timeout=120)
    assert bad.returncode == 1 and "--ablate_batches entry 16 is not one of" in bad.stderr
    bad = subprocess.run([sys.executable, "-m", "experiments.benchmark", "--batch_sizes=8",
                          "--variant=donate=0", "--ablate=norm_metrics=0",
                          f"--out={tmp_path / 'none.json'}"],
                         cwd=REPO, capture_output=True, text=True, timeout=120)
    assert bad.returncode == 1 and "cannot be combined with --ablate" in bad.stderr
    # A misspelt PyTorch mode once ran eager without a word; now it stops the run at once.
    bad = subprocess.run([sys.executable, "-m", "experiments.benchmark", "--batch_sizes=8",
                          "--torch=eager:float32,compiled:bfloat16",
                          f"--out={tmp_path / 'none.json'}"],
                         cwd=REPO, capture_output=True, text=True, timeout=120)
    assert bad.returncode == 1 and "Unknown PyTorch mode 'compiled'" in bad.stderr
    for flag, message in (("--devices=8", "--devices=8, but this process has 4 device(s)"),
                          ("--devices=3", "Batch size 8 does not split evenly over 3"),
                          # These crashed after the peak's measurement, or printed MFU -6e11%.
                          ("--steps_per_dispatch=0", "--steps_per_dispatch takes positive"),
                          ("--windows=0", "--windows must be >= 1, got 0"),
                          ("--matmul_peak=-5", "--matmul_peak is FLOP/s (0: measure it)")):
        bad = subprocess.run([sys.executable, "-m", "experiments.benchmark", "--batch_sizes=8",
                              flag, f"--out={tmp_path / 'none.json'}"],
                             cwd=REPO, capture_output=True, text=True, timeout=120)
        assert bad.returncode == 1 and message in bad.stderr, bad.stderr[-500:]
    assert "matmul peak" not in bad.stdout  # Refused before anything was measured.
    assert not (tmp_path / "none.json").exists()


_WITHOUT_TFDS = ("import runpy, sys\nfor m in ('tensorflow_datasets', 'grain', 'tensorflow'):\n"
                 "    sys.modules[m] = None\n")


def test_gpu_benchmark_needs_neither_tfds_nor_grain(tmp_path):
    # The GPU machines have jax, flax, optax, orbax and torch, not tfds or grain.
    code = _WITHOUT_TFDS + "import experiments.benchmark\nprint('imported')"
    proc = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True,
                          text=True, timeout=120)
    assert proc.returncode == 0 and "imported" in proc.stdout, proc.stderr[-2000:]
    # The evaluation half of experiments/gpu_benchmark.sh, run to the end: it looks for the
    # Inception weights in gan_jax's cache, which once meant importing tfds.
    out = tmp_path / "eval.json"
    argv = ["eval_benchmark", "--extractors=inception", "--inception_batch=2", "--batches=1",
            "--dtypes=bfloat16", "--fid_shift_num=2", f"--out={out}"]
    code = (_WITHOUT_TFDS + f"sys.argv = {argv!r}\n"
            "import jax\njax.config.update('jax_log_compiles', True)\n"
            "runpy.run_module('experiments.eval_benchmark', run_name='__main__')")
    proc = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True,
                          text=True, timeout=300,
                          env={**os.environ, "XDG_CACHE_HOME": str(tmp_path / "cache")})
    assert proc.returncode == 0, proc.stderr[-2000:]
    speed, shift = json.loads(out.read_text())
    assert [json.loads(line) for line in proc.stdout.splitlines()] == [speed, shift]
    # The timing and the FID shift share each dtype's compiled Inception (bfloat16, and
    # float32 for the shift's reference): on a GPU at batch 500 each compile is slow.
    assert len(re.findall(r"Compiling jit\(_run\)", proc.stderr)) == 2
    assert speed["extractor"] == "inception" and speed["dtype"] == "bfloat16"
    assert speed["images_per_s"] > 0 and speed["weights_sha256"] == "random"
    assert shift["images_per_set"] == 2 and np.isfinite(shift["fid_float32"])
    assert shift["fid_shift"] == shift["fid_bfloat16"] - shift["fid_float32"]


def test_a_stopped_benchmark_keeps_its_rows_and_the_previous_results(tmp_path):
    out = tmp_path / "rows.json"
    out.write_text("results of an earlier run")
    partial = pathlib.Path(f"{out}.partial")
    proc = subprocess.Popen(
        [sys.executable, "-m", "experiments.benchmark", "--models=dcgan28", "--batch_sizes=8",
         "--dtypes=float32", "--steps_per_dispatch=1", "--torch=", "--windows=1",
         "--window_steps=1", "--matmul_peak=1e11", "--ablate=donate=0",
         "--ablate=norm_metrics=0", f"--out={out}"],
        cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 300
        while not partial.exists() and proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.1)
        proc.kill()
        proc.wait()
    finally:
        proc.kill()
    assert partial.exists(), proc.stderr.read()[-2000:]
    saved = json.loads(partial.read_text())
    assert not saved["meta"]["complete"] and saved["rows"][0]["setting"] == "jit"
    assert out.read_text() == "results of an earlier run"


def test_ablations_that_do_not_fit_the_time_budget_are_skipped_and_listed(tmp_path):
    out = tmp_path / "rows.json"
    proc = subprocess.run(
        [sys.executable, "-m", "experiments.benchmark", "--models=dcgan28", "--batch_sizes=8",
         "--dtypes=float32", "--steps_per_dispatch=1,2", "--torch=", "--windows=1",
         "--window_steps=2", "--matmul_peak=1e11", "--ablate=donate=0",
         "--ablate=xla=--xla_cpu_enable_fast_math=false", "--time_budget_s=0.001",
         f"--out={out}"], cwd=REPO, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    saved = json.loads(out.read_text())
    # The default step (the last listed K) is always timed; the rest would overrun 1 ms.
    assert [r["setting"] for r in saved["rows"]] == ["jit K=2"]
    assert saved["meta"]["skipped"] == [
        "dcgan28 batch 8 float32 K=1", "ablation donate=0 at batch 8",
        "ablation xla=--xla_cpu_enable_fast_math=false at batch 8"]
    assert saved["rows"][0]["wall_s"] >= saved["rows"][0]["compile_s"] > 0
    assert "# dcgan28 batch 8 float32 K=1 skipped: " in proc.stdout
    assert ("skipped: dcgan28 batch 8 float32 K=1, ablation donate=0 at batch 8, ablation xla="
            in proc.stdout)
