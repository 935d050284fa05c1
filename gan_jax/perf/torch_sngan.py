"""SNGAN-32 and its train step in PyTorch, for the benchmark: the same model and step as
gan_jax's ``sngan32`` (gan_jax/models/resnet.py at 32 px; gan_jax.steps with loss="hinge",
n_dis=5), written as a PyTorch expert would, and timed as torch_reference times DCGAN's.

The model (Miyato et al. 2018, the CIFAR-10 ResNet): G z -> dense 4x4xC -> three up-blocks
(BN, ReLU, nearest 2x, conv 3x3, BN, ReLU, conv 3x3; shortcut 2x, conv 1x1) -> BN, ReLU,
conv 3x3, tanh; D an optimised down-block, a down-block and two plain blocks of C channels,
ReLU, a sum over space, a dense logit. Every D layer is spectrally normalised by
``torch.nn.utils.parametrizations.spectral_norm`` with one power iteration per call in
training mode, as flax's SpectralNorm does per call with ``update_stats``. Initialisation
as gan_jax's: Xavier-uniform, gain sqrt(2) in the residual branches, zero biases.

The step: ``n_dis`` D updates, each on ``batch`` real images drawn from device-resident
random uint8 data and ``batch`` fresh fakes (G in training mode, without gradients), the
hinge loss; then one G update on ``batch`` fresh latents through D; Adam(2e-4, 0, 0.9) for
both; then the EMA of G's weights. D scores real and fake in two calls, as gan_jax's step
does, so both run 2 n_dis + 1 power iterations per step. Importing this module imports
PyTorch (``pip install -e .[torch]``).
"""
import math

import torch
import torch.nn.functional as F
from torch import nn

from gan_jax.perf import torch_reference

RESOLUTION, BASE = 32, 4


def _init(layer, gain: float = 1.0):
    nn.init.xavier_uniform_(layer.weight, gain)
    nn.init.zeros_(layer.bias)
    return layer


def _sn(layer):
    return nn.utils.parametrizations.spectral_norm(layer, n_power_iterations=1)


def _up2(x):
    return F.interpolate(x, scale_factor=2, mode="nearest")


class GBlock(nn.Module):
    def __init__(self, cin: int, cout: int):
        super().__init__()
        self.b1, self.b2 = nn.BatchNorm2d(cin), nn.BatchNorm2d(cout)
        self.c1 = _init(nn.Conv2d(cin, cout, 3, padding=1), math.sqrt(2))
        self.c2 = _init(nn.Conv2d(cout, cout, 3, padding=1), math.sqrt(2))
        self.sc = _init(nn.Conv2d(cin, cout, 1))

    def forward(self, x):
        h = self.c1(_up2(F.relu(self.b1(x))))
        h = self.c2(F.relu(self.b2(h)))
        return h + self.sc(_up2(x))


class DBlock(nn.Module):
    """``first``: the optimised block (no ReLU before its first conv, the shortcut pools
    first); the shortcut has a conv where the block downsamples or changes width."""

    def __init__(self, cin: int, cout: int, down: bool, first: bool = False):
        super().__init__()
        self.down, self.first = down, first
        self.c1 = _sn(_init(nn.Conv2d(cin, cout, 3, padding=1), math.sqrt(2)))
        self.c2 = _sn(_init(nn.Conv2d(cout, cout, 3, padding=1), math.sqrt(2)))
        learned = first or down or cin != cout
        self.sc = _sn(_init(nn.Conv2d(cin, cout, 1))) if learned else None

    def forward(self, x):
        pool = (lambda t: F.avg_pool2d(t, 2)) if self.down else (lambda t: t)
        h = self.c1(x if self.first else F.relu(x))
        h = pool(self.c2(F.relu(h)))
        if self.first:
            return h + self.sc(F.avg_pool2d(x, 2))
        return h + (x if self.sc is None else pool(self.sc(x)))


class Generator(nn.Module):
    def __init__(self, width: int = 256, z_dim: int = 128, channels: int = 3):
        super().__init__()
        self.width, self.z_dim = width, z_dim
        self.dense = _init(nn.Linear(z_dim, BASE * BASE * width))
        self.blocks = nn.Sequential(*(GBlock(width, width) for _ in range(3)))
        self.bn = nn.BatchNorm2d(width)
        self.out = _init(nn.Conv2d(width, channels, 3, padding=1))

    def forward(self, z):
        h = self.dense(z).view(-1, self.width, BASE, BASE)
        return torch.tanh(self.out(F.relu(self.bn(self.blocks(h)))))


class Discriminator(nn.Module):
    def __init__(self, width: int = 128, channels: int = 3):
        super().__init__()
        self.blocks = nn.Sequential(DBlock(channels, width, down=True, first=True),
                                    DBlock(width, width, down=True),
                                    DBlock(width, width, down=False),
                                    DBlock(width, width, down=False))
        self.dense = _sn(_init(nn.Linear(width, 1)))

    def forward(self, x):
        return self.dense(F.relu(self.blocks(x)).sum(dim=(2, 3))).view(-1)


def make_step(batch: int, *, g_width: int = 256, d_width: int = 128, z_dim: int = 128,
              n_dis: int = 5, ema_decay: float = 0.999, dtype: str = "float32",
              mode: str = "eager", channels_last: bool = False, device: str = "cpu",
              seed: int = 0):
    """The step (module docstring), built as torch_reference.setup builds DCGAN's: cuDNN
    autotuning and fused Adam on CUDA, G's gradients alone asked of autograd in G's update.
    Returns ``(step, nets)``: ``step()`` returns the detached losses of the last D update
    and of G's; ``nets``: setup's namespace (``G``, ``D``, ``opt_g``, ``opt_d``, ...) and
    ``ema``, the EMA of G's parameters."""
    s = torch_reference.setup(torch, lambda: (Generator(g_width, z_dim), Discriminator(d_width)),
                              betas=(0.0, 0.9), dtype=dtype, mode=mode,
                              channels_last=channels_last, device=device, seed=seed)
    g_params = list(s.G.parameters())
    s.ema = ema = [p.detach().clone() for p in g_params]
    data = torch.randint(0, 256, (max(4096, 2 * n_dis * batch), 3, RESOLUTION, RESOLUTION),
                         dtype=torch.uint8, device=device)

    def step():
        s.begin()
        for _ in range(n_dis):
            idx = torch.randint(0, data.shape[0], (batch,), device=device)
            real = (data[idx].float() / 127.5 - 1.0).contiguous(memory_format=s.fmt)
            z = torch.randn(batch, z_dim, device=device)
            with s.autocast:
                with torch.no_grad():
                    fake = s.g_run(z)
                d_loss = (F.relu(1.0 - s.d_run(real).float()).mean()
                          + F.relu(1.0 + s.d_run(fake).float()).mean())
            s.opt_d.zero_grad(set_to_none=True)
            d_loss.backward()
            s.opt_d.step()
        z = torch.randn(batch, z_dim, device=device)
        with s.autocast:
            g_loss = -s.d_run(s.g_run(z)).float().mean()
        torch_reference.g_step(torch, g_loss, g_params, s.opt_g)
        with torch.no_grad():
            torch._foreach_lerp_(ema, g_params, 1.0 - ema_decay)
        return d_loss.detach(), g_loss.detach()

    return step, s


def time_pytorch(batch: int, *, dtype: str, mode: str = "eager", channels_last: bool = False,
                 windows: int = 5, window_steps: int = 20, device: str | None = None,
                 **model) -> dict:
    """The step's row (torch_reference.time_steps); ``model``: make_step's widths, z_dim,
    n_dis. One warm-up step in eager mode (its n_dis + 1 updates run every shape of every
    layer, so cuDNN's autotuning is done), two compiled (G's update calls G with gradients
    once a step, and CUDA graph trees record on a graph's second call)."""
    make = lambda device: make_step(batch, dtype=dtype, mode=mode, channels_last=channels_last,
                                    device=device, **model)[0]
    return torch_reference.time_steps(make, batch, dtype=dtype, mode=mode,
                                      channels_last=channels_last, windows=windows,
                                      window_steps=window_steps, device=device,
                                      warmup=1 if mode == "eager" else 2)
