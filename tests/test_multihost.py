"""Two local processes of two CPU devices each, started through jax.distributed on
loopback, against one process of four devices."""
import json
import os
import shutil
import socket

import jax
import numpy as np

from gan_jax import trainer
from tests.helpers import load_config, metric_lines, restore, start_module


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _metrics(workdir) -> dict[int, dict]:
    return {m.pop("step"): m for m in metric_lines(workdir)}


def _assert_same_dispatch(a_dir, b_dir, step, config):
    """The state after the dispatch that ends at ``step`` and the dispatch's metrics agree.

    The two runs all-reduce gradients in other orders, so they agree to rounding; GAN
    training then amplifies rounding (a ReLU that flips, Adam dividing by small moments):
    on jax 0.12 the parameters were 4e-6 apart after 6 steps, 3e-5 after 8 and 8e-4 after
    20, Adam's moments 2e-2, with each step's losses still equal to 4 digits. So states are
    compared one dispatch after the same state, where a wrong data split or a missing
    all-reduce changes the dispatch's losses in their second or third digit."""
    a, b = restore(a_dir, config, step)[0], restore(b_dir, config, step)[0]
    assert int(a.step) == int(b.step) == step
    np.testing.assert_array_equal(jax.random.key_data(a.rng), jax.random.key_data(b.rng))
    atol = config.optimizer.g.learning_rate / 2  # Half an Adam step: 1e-4.
    for x, y in zip(*(jax.tree.leaves((s.g_params, s.d_params, s.ema_params, s.g_vars,
                                       s.d_vars)) for s in (a, b)), strict=True):
        np.testing.assert_allclose(np.asarray(x), np.asarray(y), rtol=0, atol=atol)
    ma, mb = _metrics(a_dir)[step], _metrics(b_dir)[step]
    assert ma.keys() == mb.keys()
    for k in ma:
        np.testing.assert_allclose(ma[k], mb[k], rtol=1e-4, err_msg=k)


def test_two_processes_match_one_process_of_four(mnist_dir, tmp_path, monkeypatch):
    c = load_config("mnist_dcgan", "smoke")
    c.dataset.data_dir = mnist_dir
    # Every dispatch (K = 2 steps) logged and checkpointed, and every checkpoint kept.
    c.log_every, c.checkpoint.every, c.checkpoint.keep = 2, 2, 10
    trainer.train_and_evaluate(c, tmp_path / "one")

    port = _free_port()
    monkeypatch.setenv("JAX_NUM_CPU_DEVICES", "2")
    procs = [start_module("--config=experiments/configs/mnist_dcgan.py:smoke",
                          f"--config.dataset.data_dir={mnist_dir}", "--config.log_every=2",
                          "--config.checkpoint.every=2", "--config.checkpoint.keep=10",
                          f"--workdir={tmp_path / 'two'}",
                          f"--coordinator_address=127.0.0.1:{port}", "--num_processes=2",
                          f"--process_id={i}", data_dir=mnist_dir) for i in range(2)]
    outs = [p.communicate(timeout=600) for p in procs]
    for p, (out, err) in zip(procs, outs):
        assert p.returncode == 0, err[-3000:]
    assert "4 cpu device(s) in 2 process(es)" in outs[0][0]
    assert "gan_jax" not in outs[1][0] and "step" not in outs[1][0]  # Process 0 alone reports.

    # The first dispatch, from the same initial state.
    _assert_same_dispatch(tmp_path / "one", tmp_path / "two", 2, c)
    # The last, after nine dispatches' worth of data positions and keys: one process resumes
    # from the two processes' checkpoint of step 18.
    (tmp_path / "resumed" / "checkpoints").mkdir(parents=True)
    shutil.copytree(tmp_path / "two" / "checkpoints" / "18",
                    tmp_path / "resumed" / "checkpoints" / "18")
    assert trainer.train_and_evaluate(c, tmp_path / "resumed")["resumed_from"] == 18
    _assert_same_dispatch(tmp_path / "resumed", tmp_path / "two", 20, c)

    assert sorted(_metrics(tmp_path / "two")) == list(range(2, 21, 2))
    assert len(os.listdir(tmp_path / "two" / "tensorboard")) == 1
    summary = json.loads((tmp_path / "two" / "summary.json").read_text())
    assert summary["processes"] == 2 and summary["devices"] == 4


def test_sigterm_to_one_process_stops_both_after_the_same_dispatch(mnist_dir, tmp_path,
                                                               monkeypatch):
    import signal
    import time
    port = _free_port()
    monkeypatch.setenv("JAX_NUM_CPU_DEVICES", "2")
    run = tmp_path / "run"
    procs = [start_module("--config=experiments/configs/mnist_mlp.py:smoke",
                          f"--config.dataset.data_dir={mnist_dir}", "--config.num_steps=100000",
                          "--config.log_every=50", "--config.checkpoint.every=500",
                          "--config.sample_every=100000", f"--workdir={run}",
                          f"--coordinator_address=127.0.0.1:{port}", "--num_processes=2",
                          f"--process_id={i}", data_dir=mnist_dir) for i in range(2)]
    try:
        t = time.time()
        # Process 0 opens its logs after compiling, before its loop; process 1 may be
        # anywhere from start-up to its first steps (a handler of ours installed at the
        # loop lost a SIGTERM that came before).
        while not (run / "metrics.jsonl").exists():
            assert all(p.poll() is None for p in procs) and time.time() - t < 300
            time.sleep(0.05)
        procs[1].send_signal(signal.SIGTERM)  # Not the process that writes.
        outs = [p.communicate(timeout=300) for p in procs]
    finally:
        for p in procs:
            p.kill()
    for p, (out, err) in zip(procs, outs):
        assert p.returncode == 0, err[-3000:]
    summary = json.loads((run / "summary.json").read_text())
    assert summary["preempted"] and summary["steps"] < 100000
    assert "stopped by SIGTERM" in outs[0][0]
    # Both saved the same step (Orbax's multi-process save needs all of them), whole.
    ckpt = sorted(int(d) for d in os.listdir(run / "checkpoints") if d.isdigit())
    assert ckpt[-1] == summary["steps"]
    assert int(restore(run, load_config("mnist_mlp", "smoke"))[0].step) == summary["steps"]


def test_process_count_the_coordinator_does_not_run_is_an_error():
    import subprocess
    import sys
    port = _free_port()
    code = ("import sys; from gan_jax import parallel; from gan_jax.errors import ConfigError\n"
            "try:\n parallel.initialize('127.0.0.1:%d', int(sys.argv[1]), int(sys.argv[2]))\n"
            "except ConfigError as e:\n print('error:', e); sys.exit(3)\nprint('ok')" % port)
    env = {**os.environ, "JAX_NUM_CPU_DEVICES": "1"}
    coordinator = subprocess.Popen([sys.executable, "-c", code, "2", "0"], env=env,
                                   stdout=subprocess.PIPE, text=True)
    try:
        wrong = subprocess.run([sys.executable, "-c", code, "3", "1"], env=env,
                               capture_output=True, text=True, timeout=300)
        assert wrong.returncode == 3, wrong.stderr[-2000:]
        assert "told num_processes=3, but the coordinator" in wrong.stdout
        assert "runs 2" in wrong.stdout
    finally:
        coordinator.kill()
        coordinator.wait()
