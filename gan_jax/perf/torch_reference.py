"""The same DCGAN and the same step in PyTorch, timed the same way, for the benchmark.

Step (as the PyTorch DCGAN example computes it): G draws one fake batch; D takes one Adam
step on real and fake (non-saturating BCE on logits); G takes one Adam step on D's verdict
on that same fake batch. Data are random uint8 images resident on the device. PyTorch is an
optional extra (``pip install -e .[torch]``), imported only by the references: this one
and torch_sngan.py (SNGAN-32), which builds on its ``setup``, ``g_step`` and ``time_steps``.
"""
import gc
import statistics
import time
import types

from gan_jax.errors import ConfigError

# --torch modes: eager, or torch.compile in one of its modes. "reduce-overhead" replays
# CUDA graphs (on CUDA; elsewhere it compiles as "default"), the cure for launch-bound small
# batches; "max-autotune" also tunes its kernels and compiles for minutes.
MODES = ("eager", "compile", "reduce-overhead", "max-autotune")


def _nets(torch, resolution: int, channels: int, width: int, z_dim: int = 100):
    nn = torch.nn
    base, n = {28: (7, 2), 32: (4, 3), 64: (4, 4)}[resolution]
    g_layers, c = [], width * 2 ** (n - 1)
    g_layers += [nn.ConvTranspose2d(z_dim, c, base, 1, 0, bias=False), nn.BatchNorm2d(c),
                 nn.ReLU(True)]
    for i in range(n):
        last = i == n - 1
        out = channels if last else c // 2 ** (i + 1)
        g_layers.append(nn.ConvTranspose2d(c // 2 ** i, out, 4, 2, 1, bias=False))
        g_layers += [nn.Tanh()] if last else [nn.BatchNorm2d(out), nn.ReLU(True)]
    d_layers, cin = [], channels
    for i in range(n):
        d_layers.append(nn.Conv2d(cin, width * 2 ** i, 4, 2, 1, bias=False))
        if i:
            d_layers.append(nn.BatchNorm2d(width * 2 ** i))
        d_layers.append(nn.LeakyReLU(0.2, inplace=True))
        cin = width * 2 ** i
    d_layers.append(nn.Conv2d(cin, 1, base, 1, 0, bias=False))
    G, D = nn.Sequential(*g_layers), nn.Sequential(*d_layers)
    for m in list(G.modules()) + list(D.modules()):
        if isinstance(m, (nn.Conv2d, nn.ConvTranspose2d)):
            nn.init.normal_(m.weight, 0.0, 0.02)
        elif isinstance(m, nn.BatchNorm2d):
            nn.init.normal_(m.weight, 1.0, 0.02)
            nn.init.zeros_(m.bias)
    return G, D


def check_mode(mode: str) -> None:
    if mode not in MODES:
        raise ConfigError(f"Unknown PyTorch mode {mode!r}; choose from {', '.join(MODES)} "
                          "(the last three are torch.compile's modes).")


def parse_setting(setting: str) -> tuple[str, str, bool]:
    """``mode:dtype[:cl]`` (experiments.benchmark's --torch) -> (mode, dtype, channels_last)."""
    parts = setting.split(":")
    if len(parts) in (2, 3):
        check_mode(parts[0])
    if len(parts) not in (2, 3) or parts[1] not in ("float32", "bfloat16") or parts[2:] not in (
            [], ["cl"]):
        raise ConfigError(f"PyTorch setting {setting!r} is not mode:dtype[:cl] with dtype "
                          "float32 or bfloat16 and cl for channels_last, e.g. "
                          "eager:bfloat16:cl.")
    return parts[0], parts[1], parts[2:] == ["cl"]


def run_as(torch, mode: str, *modules):
    """The modules as a step in ``mode`` calls them: themselves (eager), or compiled."""
    if mode == "eager":
        return modules
    # Each setting compiles afresh, as if alone in the process: past 8 graphs of
    # nn.Sequential.forward (3 a setting) dynamo falls back to eager. Static shapes:
    # G and D share that forward, so automatic dynamic shapes took D's input for a
    # new size of G's and compiled D for any shape.
    torch.compiler.reset()
    kind = "default" if mode == "compile" else mode
    return tuple(torch.compile(m, mode=kind, dynamic=False) for m in modules)


def setup(torch, make_nets, *, betas, dtype: str, mode: str, channels_last: bool,
          device: str, seed: int = 0) -> types.SimpleNamespace:
    """What each reference step is built on: cuDNN autotuning on CUDA; G and D from
    ``make_nets()`` after seeding, on ``device`` in the memory format ``fmt``; Adam(2e-4,
    ``betas``) for each (``opt_g``, ``opt_d``; fused on CUDA); ``g_run`` and ``d_run``, the
    nets as ``mode`` runs them (G and D compiled, the optimizers not); ``begin()``, which
    a step calls first; ``autocast``, the context of G's and D's calls."""
    check_mode(mode)
    if device == "cuda":
        torch.backends.cudnn.benchmark = True
    torch.manual_seed(seed)
    fmt = torch.channels_last if channels_last else torch.contiguous_format
    G, D = (m.to(device).to(memory_format=fmt) for m in make_nets())
    adam = dict(lr=2e-4, betas=betas, fused=True if device == "cuda" else None)
    g_run, d_run = run_as(torch, mode, G, D)
    # CUDA graph replays reuse their output memory: say where a step begins, so that the
    # last step's outputs may be overwritten.
    begin = (torch.compiler.cudagraph_mark_step_begin if mode in MODES[2:] and
             device == "cuda" else lambda: None)
    return types.SimpleNamespace(
        G=G, D=D, fmt=fmt, opt_g=torch.optim.Adam(G.parameters(), **adam),
        opt_d=torch.optim.Adam(D.parameters(), **adam), g_run=g_run, d_run=d_run,
        begin=begin, autocast=torch.autocast(device_type=device, dtype=torch.bfloat16,
                                             enabled=dtype == "bfloat16"))


def g_step(torch, g_loss, g_params, opt_g) -> None:
    """G's Adam step on ``g_loss``, asking autograd for G's gradients only."""
    for p, grad in zip(g_params, torch.autograd.grad(g_loss, g_params)):
        p.grad = grad
    opt_g.step()


def make_step(resolution: int, channels: int, width: int, batch: int, *, dtype: str,
              mode: str = "eager", channels_last: bool = False, device: str = "cpu",
              seed: int = 0):
    """The step as a PyTorch expert would write it: cuDNN autotuning, fused Adam on CUDA,
    and G's update asks autograd for G's gradients only, not (as the PyTorch DCGAN example's
    ``backward()`` does) for D's weight gradients too, which it then discards. ``mode``:
    one of MODES (G and D compiled, the optimizers not). Returns ``(step, G, D)``;
    ``step()`` returns the detached D and G losses."""
    import torch
    s = setup(torch, lambda: _nets(torch, resolution, channels, width), betas=(0.5, 0.999),
              dtype=dtype, mode=mode, channels_last=channels_last, device=device, seed=seed)
    g_params = list(s.G.parameters())
    bce = torch.nn.BCEWithLogitsLoss()
    data = torch.randint(0, 256, (max(4096, 2 * batch), channels, resolution, resolution),
                         dtype=torch.uint8, device=device)
    ones = torch.ones(batch, device=device)
    zeros = torch.zeros(batch, device=device)

    def step():
        s.begin()
        idx = torch.randint(0, data.shape[0], (batch,), device=device)
        real = (data[idx].float() / 127.5 - 1.0).contiguous(memory_format=s.fmt)
        z = torch.randn(batch, 100, 1, 1, device=device)
        with s.autocast:
            fake = s.g_run(z)
            d_loss = (bce(s.d_run(real).view(-1).float(), ones)
                      + bce(s.d_run(fake.detach()).view(-1).float(), zeros))
        s.opt_d.zero_grad(set_to_none=True)
        d_loss.backward()
        s.opt_d.step()
        with s.autocast:
            g_loss = bce(s.d_run(fake).view(-1).float(), ones)
        g_step(torch, g_loss, g_params, s.opt_g)
        return d_loss.detach(), g_loss.detach()

    return step, s.G, s.D


def time_pytorch(resolution: int, channels: int, width: int, batch: int, *, dtype: str,
                 mode: str = "eager", channels_last: bool = False, windows: int = 5,
                 window_steps: int = 20, device: str | None = None) -> dict:
    make = lambda device: make_step(resolution, channels, width, batch, dtype=dtype, mode=mode,
                                    channels_last=channels_last, device=device)[0]
    return time_steps(make, batch, dtype=dtype, mode=mode, channels_last=channels_last,
                      windows=windows, window_steps=window_steps, device=device)


def time_steps(make, batch: int, *, dtype: str, mode: str, channels_last: bool,
               windows: int, window_steps: int, device: str | None = None,
               warmup: int = 3) -> dict:
    """Times ``make(device)``'s step (which returns the detached D and G losses): median
    over ``windows`` windows of ``window_steps`` steps, synchronising at window edges only,
    after ``warmup`` steps (cuDNN's autotuning, torch.compile)."""
    import torch
    device = device or ("cuda" if torch.cuda.is_available() else "cpu")
    if device == "cuda":  # This setting's peak, not the process's so far.
        gc.collect()  # Earlier settings' tensors, if a cycle still holds them.
        torch.cuda.reset_peak_memory_stats()
    step = make(device)
    sync = torch.cuda.synchronize if device == "cuda" else (lambda: None)
    t = time.perf_counter()
    for _ in range(warmup):
        step()
    sync()
    warmup_s = time.perf_counter() - t
    per_step = []
    for _ in range(windows):
        t = time.perf_counter()
        for _ in range(window_steps):
            d_loss, g_loss = step()
        sync()
        per_step.append((time.perf_counter() - t) / window_steps)
    s = statistics.median(per_step)
    peak = torch.cuda.max_memory_allocated() if device == "cuda" else None
    return {"framework": "pytorch",
            "setting": ("compile " + mode if mode in MODES[2:] else mode)
                       + (" CL" if channels_last else ""),
            "batch": batch, "dtype": dtype, "ms_per_step": 1e3 * s, "img_per_s": batch / s,
            "compile_s": warmup_s, "memory_bytes": peak, "d_loss": d_loss.item(),
            "g_loss": g_loss.item(), "backend": device, "torch_version": torch.__version__}
