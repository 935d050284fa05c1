"""The same DCGAN and the same step in PyTorch, timed the same way, for the benchmark.

Step (as the PyTorch DCGAN example computes it): G draws one fake batch; D takes one Adam
step on real and fake (non-saturating BCE on logits); G takes one Adam step on D's verdict
on that same fake batch. Data are random uint8 images resident on the device. PyTorch is an
optional extra (``pip install -e .[torch]``), imported only here.
"""
import gc
import statistics
import time

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


def make_step(resolution: int, channels: int, width: int, batch: int, *, dtype: str,
              mode: str = "eager", channels_last: bool = False, device: str = "cpu",
              seed: int = 0):
    """The step as a PyTorch expert would write it: cuDNN autotuning, fused Adam on CUDA,
    and G's update asks autograd for G's gradients only, not (as the PyTorch DCGAN example's
    ``backward()`` does) for D's weight gradients too, which it then discards. ``mode``:
    one of MODES (G and D compiled, the optimizers not). Returns ``(step, G, D)``;
    ``step()`` returns the detached D and G losses."""
    import torch
    check_mode(mode)
    if device == "cuda":
        torch.backends.cudnn.benchmark = True
    torch.manual_seed(seed)
    G, D = (m.to(device) for m in _nets(torch, resolution, channels, width))
    fmt = torch.channels_last if channels_last else torch.contiguous_format
    G, D = G.to(memory_format=fmt), D.to(memory_format=fmt)
    adam = dict(lr=2e-4, betas=(0.5, 0.999), fused=True if device == "cuda" else None)
    opt_g = torch.optim.Adam(G.parameters(), **adam)
    opt_d = torch.optim.Adam(D.parameters(), **adam)
    g_params = list(G.parameters())
    bce = torch.nn.BCEWithLogitsLoss()
    data = torch.randint(0, 256, (max(4096, 2 * batch), channels, resolution, resolution),
                         dtype=torch.uint8, device=device)
    ones = torch.ones(batch, device=device)
    zeros = torch.zeros(batch, device=device)
    if mode == "eager":
        g_run, d_run = G, D
    else:
        # Each setting compiles afresh, as if alone in the process: past 8 graphs of
        # nn.Sequential.forward (3 a setting) dynamo falls back to eager. Static shapes:
        # G and D share that forward, so automatic dynamic shapes took D's input for a
        # new size of G's and compiled D for any shape.
        torch.compiler.reset()
        kind = "default" if mode == "compile" else mode
        g_run, d_run = (torch.compile(m, mode=kind, dynamic=False) for m in (G, D))
    # CUDA graph replays reuse their output memory: say where a step begins, so that the
    # last step's outputs may be overwritten.
    begin = (torch.compiler.cudagraph_mark_step_begin if mode in MODES[2:] and
             device == "cuda" else lambda: None)
    autocast = torch.autocast(device_type=device, dtype=torch.bfloat16,
                              enabled=dtype == "bfloat16")

    def step():
        begin()
        idx = torch.randint(0, data.shape[0], (batch,), device=device)
        real = (data[idx].float() / 127.5 - 1.0).contiguous(memory_format=fmt)
        z = torch.randn(batch, 100, 1, 1, device=device)
        with autocast:
            fake = g_run(z)
            d_loss = (bce(d_run(real).view(-1).float(), ones)
                      + bce(d_run(fake.detach()).view(-1).float(), zeros))
        opt_d.zero_grad(set_to_none=True)
        d_loss.backward()
        opt_d.step()
        with autocast:
            g_loss = bce(d_run(fake).view(-1).float(), ones)
        for p, grad in zip(g_params, torch.autograd.grad(g_loss, g_params)):
            p.grad = grad
        opt_g.step()
        return d_loss.detach(), g_loss.detach()

    return step, G, D


def time_pytorch(resolution: int, channels: int, width: int, batch: int, *, dtype: str,
                 mode: str = "eager", channels_last: bool = False, windows: int = 5,
                 window_steps: int = 20, device: str | None = None) -> dict:
    import torch
    device = device or ("cuda" if torch.cuda.is_available() else "cpu")
    if device == "cuda":  # This setting's peak, not the process's so far.
        gc.collect()  # Earlier settings' tensors, if a cycle still holds them.
        torch.cuda.reset_peak_memory_stats()
    step, _, _ = make_step(resolution, channels, width, batch, dtype=dtype, mode=mode,
                           channels_last=channels_last, device=device)
    sync = torch.cuda.synchronize if device == "cuda" else (lambda: None)
    t = time.perf_counter()
    for _ in range(3):
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
