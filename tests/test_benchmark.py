import pathlib
import re
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from gan_jax import models, parallel
from gan_jax.errors import ConfigError
from gan_jax.models import dcgan, layers
from gan_jax.perf import benchmark, census, flops, targets
from gan_jax.perf.timed_engine import NORMS, TimedEngine
from gan_jax.trainer.engine import Engine

REPO = pathlib.Path(__file__).resolve().parents[1]


def test_flops_from_layer_shapes_match_a_hand_count():
    G, D = dcgan.Generator(resolution=64), dcgan.Discriminator(resolution=64)
    gv = jax.eval_shape(lambda: G.init(jax.random.PRNGKey(0), jnp.zeros((2, 100)), train=False))
    dv = jax.eval_shape(lambda: D.init(jax.random.PRNGKey(0), jnp.zeros((2, 64, 64, 3)),
                                       train=False))
    # G: dense 100 -> 4x4x512, then four 4x4 stride-2 transposed convs (4 live taps each).
    g_hand = 2 * 100 * 4 * 4 * 512 + sum(2 * s * s * cout * 4 * cin for s, cin, cout in
                                         ((8, 512, 256), (16, 256, 128), (32, 128, 64),
                                          (64, 64, 3)))
    d_hand = sum(2 * s * s * cout * 16 * cin for s, cin, cout in
                 ((32, 3, 64), (16, 64, 128), (8, 128, 256), (4, 256, 512))) + 2 * 4 * 4 * 512
    assert flops.count(lambda v, z: G.apply(v, z, train=False), gv,
                       jnp.zeros((1, 100))) == g_hand
    assert flops.count(lambda v, x: D.apply(v, x, train=False), dv,
                       jnp.zeros((1, 64, 64, 3))) == d_hand
    assert abs(g_hand / 1e9 - 0.21) < 0.01 and abs(d_hand / 1e9 - 0.21) < 0.01
    # UpConv's custom VJP counts as its 4 live taps an output pixel, its gradient as twice
    # that (the input's and the kernel's), not the zeros a dilated input would hold.
    x, k = jnp.zeros((1, 7, 7, 8)), jnp.zeros((4, 4, 8, 4))
    up = layers.upsample_conv_transpose
    assert flops.count(up, x, k) == 2 * 14 * 14 * 4 * 4 * 8
    grad = jax.grad(lambda x, k: jnp.sum(up(x, k)), (0, 1))
    assert flops.count(grad, x, k) == 3 * 2 * 14 * 14 * 4 * 4 * 8
    # A scan counts its body once per trip.
    scanned = lambda a: jax.lax.scan(lambda c, _: (c @ a, None), a, None, length=3)[0]
    assert flops.count(scanned, jnp.zeros((5, 5))) == 3 * 2 * 125


def test_benchmark_times_the_trainer_step_and_reports():
    row = benchmark.time_gan_jax("dcgan28", 8, "float32", 2, windows=1, window_steps=2,
                                 peak_flops=1e12)
    assert row["framework"] == "gan_jax" and row["batch"] == 8 and row["steps_per_dispatch"] == 2
    assert row["ms_per_step"] > 0 and np.isclose(row["img_per_s"], 8e3 / row["ms_per_step"])
    assert np.isclose(row["gflop_per_step"], benchmark.step_flops("dcgan28", 8) / 1e9)
    assert np.isfinite(row["d_loss"]) and np.isfinite(row["g_loss"])
    # The program's own memory: the state, the device-resident dataset (4096 random images)
    # and scratch of at least a float32 batch, and not far above (a batch of 8 is small).
    config = benchmark.bench_config("dcgan28", 8, "float32", 2)
    G, D = models.build(config.model, (28, 28, 1))
    engine = Engine(config, G=G, D=D, image_shape=(28, 28, 1), init_key=jax.random.PRNGKey(0),
                    data_key=jax.random.PRNGKey(1), data=np.zeros((4096, 28, 28, 1), np.uint8))
    held = sum(x.size * x.dtype.itemsize for x in jax.tree.leaves(engine.abstract_state()))
    held += 4096 * 28 * 28
    assert held + 8 * 28 * 28 * 4 <= row["memory_bytes"] < 3 * held
    torch_row = dict(row, framework="pytorch", setting="eager", img_per_s=row["img_per_s"] / 2)
    text = benchmark.table([row, torch_row])
    assert "| gan_jax | jit K=2 | dcgan28 | 8 | float32 |" in text and "| 2.00x |" in text
    # One device by default, as PyTorch's reference has (this test process has 4); on
    # several, MFU and the speed over PyTorch are per device.
    assert row["devices"] == 1 and jax.device_count() == 4
    assert np.isclose(row["mfu"], row["tflop_per_s"] / 1.0)
    two = benchmark.time_gan_jax("dcgan28", 8, "float32", 2, windows=1, window_steps=2,
                                 peak_flops=1e12, devices=2)
    assert two["devices"] == 2 and np.isclose(two["mfu"], two["tflop_per_s"] / 2.0)
    torch_row["img_per_s"] = two["img_per_s"] / 4
    assert "| gan_jax | jit K=2, 2 devices | dcgan28 | 8 | float32 |" in benchmark.table(
        [two, torch_row]) and "| 2.00x |" in benchmark.table([two, torch_row])
    # The program's kernels too, for the floors a GPU run prints (a CPU has no bandwidth).
    step = census.step_of(row["kernels"])
    assert step["total"] > 10 and step["bytes"] > 8 * 28 * 28 * 4
    assert targets.device_bandwidth(jax.devices()[0]) is None


def test_many_dispatches_ahead_on_four_cpu_devices_finish():
    # Unsynchronised, 150 one-step dispatches aborted XLA:CPU 3 times in 3 (a share of a
    # 4-device program found no free thread for 40 s); a subprocess, so a regression fails
    # this test rather than killing the pytest worker.
    code = ("from gan_jax.perf import benchmark; r = benchmark.time_gan_jax('dcgan28', 8, "
            "'float32', 1, windows=1, window_steps=100, devices=0); print(r['devices'])")
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True,
                         timeout=300)
    assert out.returncode == 0 and out.stdout.split()[-1] == "4", out.stderr[-3000:]


def test_ablations_are_parsed_and_bad_ones_refused():
    assert benchmark.parse_variant("share_fake=0+data=sequential+unroll=0") == {
        "share_fake": False, "data": "sequential", "unroll": False}
    assert benchmark.parse_variant("norm_metrics=0+shard_latents=false") == {
        "norm_metrics": False, "shard_latents": False}
    # What the default step already does would time the same program under another name:
    # the K steps are unrolled on CPU.
    for same in ("norm_metrics=1", "data=shuffled+donate=1", "unroll=1",
                 "share_fake=0+shard_latents=1"):
        with pytest.raises(ConfigError, match="is what the default step already does on cpu"):
            benchmark.parse_variant(same)
    for bad, match in (("reuse=0", "key one of"), ("donate", "key=value"),
                       ("", "changes nothing"), ("donate=maybe", "0 or 1"),
                       ("data=random", "sequential")):
        with pytest.raises(ConfigError, match=match):
            benchmark.parse_variant(bad)
    with pytest.raises(TypeError, match="Got unknown ablations \\['reuse'\\]"):
        benchmark.time_gan_jax("dcgan28", 8, "float32", 1, reuse=False)
    assert sorted(benchmark.VARIANTS) == ["data", "donate", "norm_metrics", "shard_latents",
                                          "share_fake", "unroll"]
    # A preset's ablation with a typo would only fail on the GPU, row by row: parse them all.
    for preset in benchmark.PRESETS.values():
        for spec in preset["ablate"]:
            assert spec.startswith("xla=--") or benchmark.parse_variant(spec)


def _row(img_per_s, variant=None, xla_flags="", batch=1024):
    tags = benchmark._tags({**benchmark.DEFAULTS, **(variant or {})})
    tags += [f"XLA_FLAGS={xla_flags}"] if xla_flags else []
    return {"framework": "gan_jax", "model": "dcgan64", "batch": batch, "dtype": "bfloat16",
            "steps_per_dispatch": 10, "img_per_s": img_per_s, "ablation": tags,
            "variant": variant or {}, **({"xla_flags": xla_flags} if xla_flags else {})}


def test_the_fastest_combination_joins_the_ablations_that_won_and_agree():
    default = _row(100.0)
    buffers = "--xla_gpu_enable_command_buffer"
    rows = [default,
            _row(110, {"norm_metrics": False}), _row(105, {"donate": False}),
            _row(101, {"shard_latents": False}),  # under the 2% a winner needs
            _row(150, {"data": "sequential"}),  # faster, but another computation
            _row(140, {"share_fake": False}),  # faster, but another game
            _row(120, {"unroll": False}),
            _row(115, {"unroll": True, "donate": False}),  # unroll set two ways
            _row(108, xla_flags=f"{buffers}=+WHILE --xla_gpu_autotune_level=0"),
            _row(107, xla_flags=f"{buffers}="),  # that flag set two ways
            _row(300, {"donate": False}, batch=128)]  # another batch
    best = benchmark.fastest_combination(rows, default)
    assert best == {
        "variant": {"unroll": False, "norm_metrics": False, "donate": False},
        "xla_flags": f"{buffers}=+WHILE --xla_gpu_autotune_level=0",
        "joins": ["unroll=0", "norm_metrics=0",
                  f"XLA_FLAGS={buffers}=+WHILE --xla_gpu_autotune_level=0", "donate=0"]}
    assert benchmark.variant_spec(best["variant"]) == "donate=0+unroll=0+norm_metrics=0"
    assert benchmark.parse_variant(benchmark.variant_spec(best["variant"])) == best["variant"]
    # A lower bar admits the small gain; a higher one leaves a single winner: nothing new.
    assert benchmark.fastest_combination(rows, default, -0.5)["variant"]["shard_latents"] is False
    assert benchmark.fastest_combination(rows, default, 0.19) is None
    # Winners whose join was timed already (here as an ablation of its own) give nothing new.
    pair = {"norm_metrics": False, "donate": False}
    assert benchmark.fastest_combination(rows[:3] + [_row(112, pair)], default) is None
    assert benchmark.fastest_combination(rows[:3], default)["variant"] == pair


def test_a_time_budget_admits_only_the_jobs_that_fit():
    now = [100.0]
    budget = benchmark.Budget(60, clock=lambda: now[0])
    assert budget.allows(60) and not budget.allows(61)
    now[0] = 150.0
    assert budget.elapsed() == 50 and budget.left() == 10
    assert budget.allows(10) and not budget.allows(10.5)
    unlimited = benchmark.Budget(0, clock=lambda: now[0])
    now[0] = 1e9
    assert unlimited.allows(1e9) and unlimited.left() == float("inf")
    with pytest.raises(ConfigError, match="0 \\(none\\) or positive"):
        benchmark.Budget(-1)


def test_an_ablated_step_is_timed_and_labelled():
    row = benchmark.time_gan_jax("dcgan28", 8, "float32", 1, windows=1, window_steps=1,
                                 norm_metrics=False, donate=False, data="sequential",
                                 share_fake=False)
    tags = ["share_fake=0", "donate=0", "data=sequential", "norm_metrics=0"]
    assert row["ablation"] == tags and row["setting"] == "jit " + " ".join(tags)
    assert row["variant"] == {"share_fake": False, "donate": False, "data": "sequential",
                              "norm_metrics": False}
    # Model FLOPs are the ablated step's: without share_fake, G's update runs G forward
    # again on a batch of its own.
    g_forward = 2 * 8 * (100 * 7 * 7 * 64 + sum(s * s * cout * 4 * cin for s, cin, cout in
                                               ((14, 64, 32), (28, 32, 1))))
    assert row["gflop_per_step"] * 1e9 == benchmark.step_flops("dcgan28", 8, share_fake=False)
    assert row["gflop_per_step"] * 1e9 == benchmark.step_flops("dcgan28", 8) + g_forward
    assert np.isfinite(row["d_loss"]) and row["profile"] is None
    base = dict(row, ablation=[], setting="jit", img_per_s=3 * row["img_per_s"])
    text = benchmark.ablation_table([base, row])
    assert f"| {' '.join(tags)} |" in text and "| 3.00x |" in text


def _small_engine(cls, devices=1, **kwargs):
    """An MLP GAN's engine: the same programs as DCGAN's, compiled in seconds."""
    config = benchmark.bench_config("dcgan28", 8, "float32", 1, devices=devices)
    config.model.name, config.model.g_width, config.model.d_width = "mlp", 16, 16
    G, D = models.build(config.model, (28, 28, 1))
    return cls(config, G=G, D=D, image_shape=(28, 28, 1), init_key=jax.random.PRNGKey(0),
               data_key=jax.random.PRNGKey(1), data=np.zeros((16, 28, 28, 1), np.uint8),
               **kwargs)


def _code(text):
    """A compiled program's instructions; only the debug tables of source lines may be
    ordered otherwise between two compiles of one program."""
    return [re.sub(r", metadata=\{[^}]*\}", "", line)
            for line in text[text.index("\n%"):].splitlines()]


def test_the_benchmark_times_the_trainers_program_and_norm_metrics_0_drops_the_norms():
    trainer, timed = _small_engine(Engine), _small_engine(TimedEngine)
    lean = _small_engine(TimedEngine, norm_metrics=False)
    out = []
    for engine in (trainer, timed, lean):
        state = engine.new_state()
        engine.compile(state)
        out.append(engine.dispatch(state))
    # Unablated, the benchmark compiles the trainer's very program.
    assert _code(timed.hlo_text()) == _code(trainer.compiled.as_text())
    assert set(NORMS) <= set(timed.metric_names())
    assert set(lean.metric_names()) == set(timed.metric_names()) - set(NORMS)
    # Unread, the norms' reductions leave the program (each norm ends in a square root;
    # Adam's updates hold the others), and the state is updated exactly as before (over
    # more steps the fusions that change may round differently: ~1e-7 after two DCGAN steps).
    sqrts = lambda engine: engine.hlo_text().count(" sqrt(")
    assert sqrts(lean) == sqrts(timed) - len(NORMS)
    (timed_state, timed_metrics), (lean_state, lean_metrics) = out[1:]
    assert int(lean_state.step) == 1
    for a, b in zip(jax.tree.leaves(timed_state), jax.tree.leaves(lean_state), strict=True):
        np.testing.assert_array_equal(a, b)
    for name, value in lean_metrics.items():
        np.testing.assert_array_equal(value, timed_metrics[name], err_msg=name)


def test_shard_latents_0_leaves_the_latent_draw_to_xla_on_several_devices():
    sharded, free = (_small_engine(TimedEngine, devices=2, shard_latents=flag)
                     for flag in (True, False))
    for engine in (sharded, free):
        engine.compile(engine.new_state())
    assert _code(sharded.hlo_text()) != _code(free.hlo_text())


def test_a_program_compiled_from_shapes_alone_is_the_one_the_benchmark_runs():
    images = np.zeros((64, 28, 28, 1), np.uint8)
    ran, abstract = (benchmark._engine("dcgan28", 8, "float32", 2, {"unroll": False},
                                       images=images)[0] for _ in range(2))
    ran.compile(ran.new_state())
    abstract.compile_abstract()
    assert _code(abstract.hlo_text()) == _code(ran.hlo_text())
    assert abstract.program_bytes() == ran.program_bytes()
    assert abstract.metric_names() == ran.metric_names()


def test_compile_only_counts_the_kernels_of_one_step_and_labels_the_setting():
    mesh = parallel.make_mesh(1)
    row = benchmark.compile_only("dcgan28", 8, "float32", 3, mesh, unroll=False,
                                 norm_metrics=False)
    assert row["ablation"] == ["unroll=0", "norm_metrics=0"] and row["platform"] == "cpu"
    loop = census.step_of(row["kernels"])
    # The K steps are one loop; its body holds one step: D's and G's convolutions, forward
    # and backward, and the optimizers' work.
    assert loop in row["kernels"]["loops"] and loop["kinds"]["convolution"] >= 4
    assert {"Discriminator forward", "Discriminator backward", "Generator forward",
            "Generator backward"} <= {p.split(" BatchNorm")[0] for p in loop["parts"]}
    assert sum(loop["parts"].values()) == loop["total"] == sum(loop["kinds"].values())
    # With K=1 there is no step loop: the step is the whole program.
    one = benchmark.compile_only("dcgan28", 8, "float32", 1, mesh)
    assert census.step_of(one["kernels"]) is one["kernels"]["per_call"]
    assert one["kernels"]["per_call"]["kinds"]["convolution"] >= 4
    line = census.table([row]).splitlines()[-1]
    assert line.startswith("| 8 | float32 | 3 | unroll=0 norm_metrics=0 |")
    assert f"| {loop['total']} | {loop['kinds']['convolution']} |" in line


def test_compile_only_gpu_devices_fail_clearly_where_they_cannot_be_made(tmp_path):
    with pytest.raises(ConfigError, match="No GPU target description at"):
        targets.read(tmp_path / "h100.textproto")
    text = targets.read(REPO / "experiments/gpu_targets/h200.textproto")
    assert "core_count: 132" in text and 'device_description_str: "NVIDIA H200"' in text
    assert targets.memory_bandwidth(text) == 4.8e12  # The roofline floors' bandwidth.
    with pytest.raises(ConfigError, match="no memory_bandwidth"):
        targets.memory_bandwidth("core_count: 132")
    if jax.__version_info__ < (0, 11):  # Here (CI): jax 0.10 has no compile-only GPUs.
        with pytest.raises(ConfigError, match="jax >= 0.11"):
            targets.mesh(text)
        proc = subprocess.run([sys.executable, "-m", "experiments.gpu_compile"], cwd=REPO,
                              capture_output=True, text=True, timeout=120)
        assert proc.returncode == 1 and "error: Could not make a compile-only" in proc.stderr
    with pytest.raises(ConfigError, match="Could not make a compile-only cuda device"):
        targets.mesh("this is not a target description")


@pytest.mark.parametrize("donate", [True, False])
def test_engine_donates_the_state_unless_told_not_to(donate):
    engine = _small_engine(TimedEngine, donate=donate)
    state = engine.new_state()
    engine.compile(state)
    new, _ = engine.dispatch(state)
    assert int(new.step) == 1
    assert state.g_params["Dense_0"]["kernel"].is_deleted() == donate


def test_the_ratio_to_pytorch_is_in_the_rows_and_the_table():
    row = dict(model="dcgan64", batch=128, dtype="bfloat16", ms_per_step=1.0, tflop_per_s=1.0,
               mfu=None, d_loss=0.5, g_loss=0.5)
    rows = [dict(row, framework="gan_jax", setting="jit", img_per_s=300.0, devices=2),
            dict(row, framework="pytorch", setting="eager", img_per_s=100.0),
            dict(row, framework="pytorch", setting="compile", img_per_s=120.0),
            dict(row, framework="gan_jax", setting="jit", batch=1024, img_per_s=50.0)]
    text = benchmark.table(rows)
    # Per device (300 / 2) over the best PyTorch setting (120); none at batch 1024.
    assert rows[0]["per_device_vs_best_pytorch"] == 1.25 and "| 1.25x |" in text
    assert rows[3]["per_device_vs_best_pytorch"] is None
    assert "per_device_vs_best_pytorch" not in rows[1]


def test_nothing_in_the_library_imports_the_benchmark():
    """gan_jax.perf sits on top of the library: a library module that imported it would
    pull in the benchmark's machinery (and PyTorch's reference) with the trainer."""
    perf = re.compile(r"^\s*(from\s+gan_jax\.perf\b|from\s+gan_jax\s+import\s+.*\bperf\b|"
                      r"import\s+gan_jax\.perf\b)", re.M)
    library = [p for p in (REPO / "gan_jax").rglob("*.py")
               if (REPO / "gan_jax/perf") not in p.parents]
    assert len(library) > 10
    assert [str(p) for p in library if perf.search(p.read_text())] == []
    assert perf.search("from gan_jax.perf import benchmark")  # The pattern itself matches.


def test_every_preset_is_a_run_the_benchmark_can_start():
    """A typo in a preset would only show on the GPU: each names flags that
    experiments.benchmark defines, known models and PyTorch settings that parse, and the
    GPU script runs each H200 preset (SNGAN-32's beside DCGAN-64's)."""
    from gan_jax.perf import torch_reference
    source = (REPO / "experiments/benchmark.py").read_text()
    defined = set(re.findall(r"DEFINE_\w+\(\s*\"(\w+)\"", source))
    script = (REPO / "experiments/gpu_benchmark.sh").read_text()
    assert {"h200", "h200_sngan32", "cpu"} <= set(benchmark.PRESETS)
    for name, preset in benchmark.PRESETS.items():
        assert set(preset) <= defined, (name, set(preset) - defined)
        assert preset["models"] and set(preset["models"]) <= set(benchmark.MODELS), name
        for setting in preset["torch"]:
            torch_reference.parse_setting(setting)
        if name.startswith("h200"):
            assert f"--preset={name} " in script, name
    assert benchmark.PRESETS["h200_sngan32"]["models"] == ["sngan32"]
    assert benchmark.PRESETS["h200_sngan32"]["batch_sizes"] == ["64"]
