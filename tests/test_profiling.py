import types

import jax
import jax.numpy as jnp
import pytest

from gan_jax.perf import profiling

def test_a_traced_program_is_split_into_kinds_of_work(tmp_path):
    k = jax.random.normal(jax.random.PRNGKey(0), (3, 3, 16, 16))
    w = jax.random.normal(jax.random.PRNGKey(1), (16 * 32 * 32, 64))

    @jax.jit
    def f(x):
        h = jax.lax.conv_general_dilated(x, k, (1, 1), "SAME",
                                         dimension_numbers=("NHWC", "HWIO", "NHWC"))
        h = jnp.tanh(h) - jnp.mean(h, axis=(1, 2), keepdims=True)
        return h.reshape(h.shape[0], -1) @ w

    x = jnp.ones((8, 32, 32, 16))
    compiled = f.lower(x).compile()
    jax.block_until_ready(compiled(x))
    path, wall = profiling.capture(lambda: [jax.block_until_ready(compiled(x))
                                            for _ in range(3)], str(tmp_path))
    s = profiling.summarize(path, compiled.as_text(), steps=3, wall_s=wall)
    kinds = {r["kind"]: r for r in s["kinds"]}
    assert {"convolution", "matmul"} <= set(kinds), s["kinds"]
    assert sum(r["share"] for r in s["kinds"]) == pytest.approx(1.0)
    assert s["op_ms_per_step"] > 0 and 0 < s["busy_ms_per_step"] <= s["op_ms_per_step"] + 1e-6
    assert s["ops"][0]["ms_per_step"] >= s["ops"][-1]["ms_per_step"]
    assert all(r["calls_per_step"] == pytest.approx(1.0) for r in s["ops"])
    conv = next(r for r in s["ops"] if r["kind"] == "convolution")
    assert conv["bytes_per_call"] == 4 * (2 * 8 * 32 * 32 * 16 + 3 * 3 * 16 * 16)
    assert sum(k["bytes_per_step"] for k in s["kinds"]) == pytest.approx(
        sum(r["bytes_per_call"] * r["calls_per_step"] for r in s["ops"]))
    text = profiling.table(s)
    assert len(s["ops"]) > 2  # Every op is kept; the table lists the heaviest.
    two = profiling.table(s, top=2).splitlines()
    assert sum(ln.startswith(f"| {r['op']} |") for r in s["ops"] for ln in two) == 2
    assert "| convolution |" in text and "device busy" in text and "of its floor" not in text

    def conv_row(table):
        return next(ln.split(" | ") for ln in table.splitlines()
                    if ln.startswith(f"| {conv['op']} |"))

    gbps = conv["bytes_per_call"] / conv["ms_per_step"] / 1e6
    assert float(conv_row(text)[4].replace(",", "")) == pytest.approx(gbps, rel=0.01)
    assert conv_row(text)[5] == "-"  # XLA:CPU's convolutions are not costed in FLOPs.
    # At the bandwidth the convolution ran at, it ran at its floor.
    floored = profiling.table(s, bandwidth=gbps * 1e9, peak_flops=1e30)
    assert conv_row(floored)[6] == "100%"


def test_a_thread_whose_ops_come_late_is_still_read():
    # On the CPU an Eigen thread can log many threadpool events before its first op.
    ev = lambda name, **stats: types.SimpleNamespace(name=name, stats=list(stats.items()))
    late = types.SimpleNamespace(name="tf_XLAEigen/1", events=[ev("Threadpool")] * 60
                                 + [ev("fusion.1", hlo_op="fusion.1")])
    idle = types.SimpleNamespace(name="python", events=[ev("Threadpool")] * 60)
    assert profiling._op_lines(types.SimpleNamespace(lines=[idle, late])) == [late]


def test_capture_fails_clearly_without_a_trace(tmp_path, monkeypatch):
    monkeypatch.setattr(jax.profiler, "start_trace", lambda d: None)
    monkeypatch.setattr(jax.profiler, "stop_trace", lambda: None)
    with pytest.raises(RuntimeError, match="no .xplane.pb"):
        profiling.capture(lambda: None, str(tmp_path))
