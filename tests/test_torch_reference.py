"""The PyTorch reference of the step benchmark (gan_jax/perf/torch_reference.py): the same
model and step as gan_jax's, its settings, and its compiled modes; most need the [torch]
extra and skip without it."""
import numpy as np
import pytest

from gan_jax.errors import ConfigError


def test_pytorch_reference_runs_the_same_model():
    torch = pytest.importorskip("torch", reason="PyTorch is an optional extra")
    from gan_jax.perf import torch_reference
    G, D = torch_reference._nets(torch, 64, 3, 64)
    # The PyTorch DCGAN example's netG / netD sizes, as gan_jax's DCGAN-64 has.
    assert sum(p.numel() for p in G.parameters()) == 3_576_704
    assert sum(p.numel() for p in D.parameters()) == 2_765_568
    row = torch_reference.time_pytorch(28, 1, 8, 4, dtype="float32", windows=1,
                                       window_steps=1, device="cpu")
    assert row["framework"] == "pytorch" and row["ms_per_step"] > 0
    assert np.isfinite(row["d_loss"]) and np.isfinite(row["g_loss"])


def test_pytorch_reference_step_is_the_dcgan_examples_step():
    """The tuned step (G's gradients only, via autograd.grad) updates G and D exactly as the
    PyTorch DCGAN example's step (backward() through D too) does."""
    torch = pytest.importorskip("torch", reason="PyTorch is an optional extra")
    from gan_jax.perf import torch_reference
    res, ch, width, batch = 28, 1, 8, 4
    step, G, D = torch_reference.make_step(res, ch, width, batch, dtype="float32")
    losses = [[x.item() for x in step()] for _ in range(3)]
    # The example's step, written out, with the same seed and the same order of draws.
    torch.manual_seed(0)
    G0, D0 = torch_reference._nets(torch, res, ch, width)
    opt_g = torch.optim.Adam(G0.parameters(), lr=2e-4, betas=(0.5, 0.999))
    opt_d = torch.optim.Adam(D0.parameters(), lr=2e-4, betas=(0.5, 0.999))
    bce = torch.nn.BCEWithLogitsLoss()
    data = torch.randint(0, 256, (4096, ch, res, res), dtype=torch.uint8)
    for d_loss, g_loss in losses:
        real = data[torch.randint(0, data.shape[0], (batch,))].float() / 127.5 - 1.0
        fake = G0(torch.randn(batch, 100, 1, 1))
        d_loss0 = (bce(D0(real).view(-1), torch.ones(batch))
                   + bce(D0(fake.detach()).view(-1), torch.zeros(batch)))
        opt_d.zero_grad()
        d_loss0.backward()
        opt_d.step()
        g_loss0 = bce(D0(fake).view(-1), torch.ones(batch))
        opt_g.zero_grad()
        g_loss0.backward()
        opt_g.step()
        np.testing.assert_allclose([d_loss, g_loss], [d_loss0.item(), g_loss0.item()],
                                   rtol=1e-5)
    for net, net0 in ((G, G0), (D, D0)):
        for (name, p), p0 in zip(net.state_dict().items(), net0.state_dict().values()):
            np.testing.assert_allclose(p.numpy(), p0.numpy(), rtol=1e-5, atol=1e-6,
                                       err_msg=name)


def test_pytorch_settings_are_parsed_and_bad_ones_refused():
    from gan_jax.perf import torch_reference
    assert torch_reference.parse_setting("eager:bfloat16:cl") == ("eager", "bfloat16", True)
    assert torch_reference.parse_setting("reduce-overhead:float32") == (
        "reduce-overhead", "float32", False)
    for bad, match in (("compiled:float32", "Unknown PyTorch mode 'compiled'"),
                       ("eager", "not mode:dtype"), ("eager:fp16", "not mode:dtype"),
                       ("compile:bfloat16:nhwc", "not mode:dtype"),
                       ("eager:float32:cl:x", "not mode:dtype")):
        with pytest.raises(ConfigError, match=match):
            torch_reference.parse_setting(bad)


def test_compiled_pytorch_settings_compute_the_eager_step_each_compiled_afresh():
    """torch.compile's modes give the eager step's losses; each setting compiles its own
    graphs (3: G, D on inputs without and with grad), where dynamo's caches made the third
    compiled setting of a run fall back to eager (its recompile limit, 8 graphs); and every
    graph is for static shapes (G and D share nn.Sequential.forward, so D's graph was made
    for dynamic ones, automatic dynamic shapes taking G's input for an earlier size)."""
    import logging
    torch = pytest.importorskip("torch", reason="PyTorch is an optional extra")
    from torch._dynamo.utils import counters
    from gan_jax.perf import torch_reference

    def losses(mode, batch):
        step, _, _ = torch_reference.make_step(28, 1, 8, batch, dtype="float32", mode=mode)
        return [[x.item() for x in step()] for _ in range(2)]

    class Keep(logging.Handler):
        def emit(self, record):
            messages.append(record.getMessage())

    messages, keep = [], Keep()
    torch._logging.set_logs(dynamic=logging.INFO)  # Shape decisions; these don't propagate.
    loggers = [logging.getLogger(n) for n in ("torch._dynamo",
                                              "torch.fx.experimental.symbolic_shapes")]
    for logger in loggers:
        logger.addHandler(keep)
    try:
        for batch in (4, 8):
            eager = losses("eager", batch)
            for mode in ("compile", "reduce-overhead"):
                before = counters["stats"]["unique_graphs"]
                np.testing.assert_allclose(losses(mode, batch), eager, rtol=1e-4, err_msg=mode)
                assert counters["stats"]["unique_graphs"] - before == 3, (mode, batch)
    finally:
        for logger in loggers:
            logger.removeHandler(keep)
        torch._logging.set_logs()
    assert any("produce_guards" in m for m in messages), "dynamo's shape log was not kept"
    assert not [m for m in messages if "as dynamic" in m]
