"""Building blocks shared by the tiny codecs: latent normalisation, Snake, residual units."""
from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn


INITIAL_LOGVAR = -8.0


def start_with_small_variance(head: nn.Conv1d | nn.Conv2d, latent_channels: int) -> None:
    """Make a fresh posterior head emit log-variance ~ -8 (std ~0.02). With the default ~0 the
    sampled latents start as unit noise that drowns the mean, and with a small KL weight the
    encoder needs hundreds of steps just to quieten it before reconstruction can improve."""
    with torch.no_grad():
        head.weight[latent_channels:].mul_(0.1)
        head.bias[latent_channels:].fill_(INITIAL_LOGVAR)


def bound_logvar(raw: Tensor) -> Tensor:
    """Map the posterior head's output to a log-variance in [-30, 0): a posterior wider than the
    N(0, 1) prior is never useful, and without this bound one bad step could throw the head to a
    huge variance whose noise then swamps every latent (seen in the audio codec after a few
    minutes of training). Softplus keeps a gradient everywhere, unlike a hard clamp at the top."""
    return (-F.softplus(-raw)).clamp_min(-30.0)


class LatentNorm(nn.Module):
    """Per-channel affine map between the codec's raw latents and the unit-variance latents the
    diffusion model sees. The statistics are buffers so they travel with the checkpoint."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.register_buffer("mean", torch.zeros(channels))
        self.register_buffer("std", torch.ones(channels))

    def _view(self, t: Tensor, ndim: int) -> Tensor:
        return t.view(1, -1, *([1] * (ndim - 2)))

    def normalize(self, raw: Tensor) -> Tensor:
        mean, std = self._view(self.mean, raw.dim()), self._view(self.std, raw.dim())
        return (raw - mean.to(raw.dtype)) / std.to(raw.dtype)

    def denormalize(self, latents: Tensor) -> Tensor:
        mean, std = self._view(self.mean, latents.dim()), self._view(self.std, latents.dim())
        return latents * std.to(latents.dtype) + mean.to(latents.dtype)

    @torch.no_grad()
    def fit(self, raw: Tensor) -> None:
        """Set the statistics from raw latents `[B, C, ...]` (channel axis 1)."""
        if raw.dim() < 3 or raw.shape[1] != self.mean.numel():
            raise ValueError(
                f"raw latents must be [B, {self.mean.numel()}, ...] to fit the latent statistics, got {tuple(raw.shape)}"
            )
        flat = raw.transpose(0, 1).reshape(raw.shape[1], -1).double()  # [C, N]
        if flat.shape[1] < 2:
            raise ValueError("need at least two latent values per channel to fit the latent statistics")
        self.mean.copy_(flat.mean(dim=1).to(self.mean.dtype))
        # A floor keeps a dead channel from being blown up into pure noise.
        self.std.copy_(flat.std(dim=1).clamp_min(1e-4).to(self.std.dtype))


class _SnakeFn(torch.autograd.Function):
    """snake(x) = x + sin^2(a x) / a = x + (1 - cos(2 a x)) / (2 a), with a hand-written backward:
    autograd through the composite keeps five full-size temporaries, and at the full sample rate
    those dominated a training step."""

    @staticmethod
    def forward(ctx: Any, x: Tensor, alpha: Tensor) -> Tensor:
        ctx.save_for_backward(x, alpha)
        a = alpha + 1e-9
        return x + (1.0 - torch.cos(2.0 * a * x)) / (2.0 * a)

    @staticmethod
    def backward(ctx: Any, grad: Tensor) -> tuple[Tensor, Tensor]:
        x, alpha = ctx.saved_tensors
        a = alpha + 1e-9
        two_ax = 2.0 * a * x
        sin = torch.sin(two_ax)
        grad_x = grad * (1.0 + sin)
        # d/da [(1 - cos(2ax)) / (2a)] = x sin(2ax) / a - (1 - cos(2ax)) / (2a^2)
        d_alpha = (x * sin) / a - (1.0 - torch.cos(two_ax)) / (2.0 * a * a)
        grad_alpha = (grad * d_alpha).sum(dim=(0, 2), keepdim=True)
        return grad_x, grad_alpha


class Snake(nn.Module):
    """x + sin^2(a x) / a with a learnable per-channel frequency a: a periodic bias that lets a small
    decoder synthesise tones instead of approximating sines with piecewise-linear pieces."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        # Log-parametrised: a plain alpha can cross zero, where 1 / alpha blows the signal up.
        self.log_alpha = nn.Parameter(torch.zeros(1, channels, 1))

    def forward(self, x: Tensor) -> Tensor:
        return _SnakeFn.apply(x, self.log_alpha.exp())  # [B, C, L]


class AudioResUnit(nn.Module):
    """Dilated 1D residual unit; the last conv starts at zero so a fresh unit is the identity."""

    def __init__(self, channels: int, dilation: int, kernel: int = 7) -> None:
        super().__init__()
        self.act1 = Snake(channels)
        self.conv1 = nn.Conv1d(channels, channels, kernel, padding=dilation * (kernel - 1) // 2, dilation=dilation)
        self.act2 = Snake(channels)
        self.conv2 = nn.Conv1d(channels, channels, 1)
        nn.init.zeros_(self.conv2.weight)
        nn.init.zeros_(self.conv2.bias)

    def forward(self, x: Tensor) -> Tensor:
        return x + self.conv2(self.act2(self.conv1(self.act1(x))))  # [B, C, L]


class SpatialResBlock(nn.Module):
    """3x3 residual block applied to each frame independently."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(channels, channels, 3, padding=1)
        self.conv2 = nn.Conv2d(channels, channels, 3, padding=1)
        self.act = nn.SiLU()
        nn.init.zeros_(self.conv2.weight)
        nn.init.zeros_(self.conv2.bias)

    def forward(self, x: Tensor) -> Tensor:
        return x + self.conv2(self.act(self.conv1(self.act(x))))  # [N, C, h, w]


class TemporalResBlock(nn.Module):
    """Kernel-3 conv across latent frames (zero padded at the clip ends). Each block widens the
    temporal receptive field by one latent frame on each side, which is what chunked decoding
    must overlap."""

    radius = 1

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.conv = nn.Conv3d(channels, channels, (3, 1, 1), padding=(1, 0, 0))
        self.act = nn.SiLU()
        nn.init.zeros_(self.conv.weight)
        nn.init.zeros_(self.conv.bias)

    def forward(self, x: Tensor, batch: int) -> Tensor:
        n, c, h, w = x.shape  # [B * T', C, h, w]
        v = x.view(batch, n // batch, c, h, w).transpose(1, 2)  # [B, C, T', h, w]
        v = v + self.conv(self.act(v))
        return v.transpose(1, 2).reshape(n, c, h, w)


class ChannelShortcut(nn.Module):
    """Parameter-free channel map where the counts divide (group mean down, repeat up), else a
    1x1 conv. Paired with pixel (un)shuffle it gives each resolution change an identity-like path
    (the space-to-channel shortcut of DC-AE), which is what lets a high-compression autoencoder
    learn quickly: flat colours and coarse layout flow through it from the first step."""

    def __init__(self, cin: int, cout: int) -> None:
        super().__init__()
        self.cin, self.cout = cin, cout
        self.proj = None if (cin % cout == 0 or cout % cin == 0) else nn.Conv2d(cin, cout, 1)

    def forward(self, x: Tensor) -> Tensor:
        if self.proj is not None:
            return self.proj(x)
        n, c, h, w = x.shape  # [N, cin, h, w]
        if self.cin >= self.cout:
            return x.view(n, self.cout, self.cin // self.cout, h, w).mean(dim=2)  # [N, cout, h, w]
        return x.repeat_interleave(self.cout // self.cin, dim=1)  # [N, cout, h, w]


class DownBlock(nn.Module):
    """Halve the resolution: a strided 3x3 conv plus a pixel-unshuffle shortcut."""

    def __init__(self, cin: int, cout: int, activate: bool = True) -> None:
        super().__init__()
        self.act = nn.SiLU() if activate else nn.Identity()
        self.conv = nn.Conv2d(cin, cout, 3, stride=2, padding=1)
        self.shortcut = ChannelShortcut(4 * cin, cout)

    def forward(self, x: Tensor) -> Tensor:
        skip = self.shortcut(F.pixel_unshuffle(x, 2))  # [N, cout, h/2, w/2]
        return skip + self.conv(self.act(x))


class UpBlock(nn.Module):
    """Double the resolution: a 3x3 sub-pixel conv plus a channel-repeat + pixel-shuffle shortcut."""

    def __init__(self, cin: int, cout: int) -> None:
        super().__init__()
        self.act = nn.SiLU()
        self.conv = nn.Conv2d(cin, 4 * cout, 3, padding=1)
        self.shortcut = ChannelShortcut(cin, 4 * cout)

    def forward(self, x: Tensor) -> Tensor:
        out = self.conv(self.act(x)) + self.shortcut(x)  # [N, 4 cout, h, w]
        return F.pixel_shuffle(out, 2)  # [N, cout, 2h, 2w]
