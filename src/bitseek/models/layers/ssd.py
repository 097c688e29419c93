"""Mamba-2 style state-space block in plain PyTorch (no mamba-ssm / triton kernels).

The SSD ("state space duality") layer computes, per head h with scalar decay ``A_h < 0``::

    h_t = exp(dt_t * A) * h_{t-1} + dt_t * x_t B_t^T        (state: headdim x d_state)
    y_t = h_t C_t + D * x_t

:func:`ssd_scan` evaluates it chunk-wise: inside a chunk the recurrence is unrolled into a masked
quadratic (attention-like) form, and only the chunk-boundary states are carried by a recurrence.
This is the algorithm of the Mamba-2 paper's reference ("minimal discrete") implementation, which
WSCH calls with the whole sequence as one chunk; :func:`ssd_reference` is the literal per-step
recurrence the chunked form is tested against. Everything here is batched matmuls, so it runs
well on CPU and GPU alike.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from bitseek.errors import InputError

__all__ = ["RMSNorm", "SSD", "Mamba2Block", "segsum", "ssd_scan", "ssd_reference"]


def segsum(x: Tensor) -> Tensor:
    """Segment sums ``out[..., i, j] = sum(x[..., j+1 : i+1])`` for j <= i, ``-inf`` above the diagonal.

    ``exp(segsum(a))`` is the lower-triangular matrix of cumulative decays between positions. It is
    built from masked cumulative sums (not a difference of cumsums) so that it stays exact when
    the decays are large.
    """
    t = x.size(-1)
    xx = x.unsqueeze(-1).expand(*x.shape, t)  # [..., i, j] = x[..., i]
    strict = torch.tril(torch.ones(t, t, dtype=torch.bool, device=x.device), diagonal=-1)
    xx = xx.masked_fill(~strict, 0.0)
    out = torch.cumsum(xx, dim=-2)
    lower = torch.tril(torch.ones(t, t, dtype=torch.bool, device=x.device), diagonal=0)
    return out.masked_fill(~lower, float("-inf"))


def _check_scan_inputs(x: Tensor, dt: Tensor, A: Tensor, B: Tensor, C: Tensor) -> tuple[int, int, int, int, int, int]:
    if x.dim() != 4:
        raise InputError(f"ssd: x must be (batch, length, heads, headdim), got shape {tuple(x.shape)}")
    b, l, h, p = x.shape
    if dt.shape != (b, l, h):
        raise InputError(f"ssd: dt must be {(b, l, h)}, got {tuple(dt.shape)}")
    if A.shape != (h,):
        raise InputError(f"ssd: A must be ({h},), got {tuple(A.shape)}")
    if B.dim() != 4 or B.shape[:2] != (b, l) or B.shape != C.shape:
        raise InputError(f"ssd: B and C must both be (batch, length, groups, d_state) with batch={b}, length={l}; "
                         f"got {tuple(B.shape)} and {tuple(C.shape)}")
    g, n = B.shape[2], B.shape[3]
    if h % g:
        raise InputError(f"ssd: heads ({h}) must be a multiple of groups ({g})")
    return b, l, h, p, g, n


def ssd_scan(x: Tensor, dt: Tensor, A: Tensor, B: Tensor, C: Tensor, chunk_size: int = 0,
             initial_state: Tensor | None = None, return_final_state: bool = True) -> tuple[Tensor, Tensor | None]:
    """Chunked SSD scan (without the ``D`` skip term).

    Shapes: ``x`` (b, l, h, p), ``dt`` (b, l, h) positive step sizes, ``A`` (h,) negative decays,
    ``B``/``C`` (b, l, g, n) with heads split evenly over the g groups, ``initial_state``
    (b, h, p, n). ``chunk_size`` 0 means one chunk for the whole sequence (WSCH). Returns
    ``y`` (b, l, h, p) and the final state (b, h, p, n), or None for it when
    ``return_final_state`` is False: with a single chunk and no initial state the states are
    then never formed, which for WSCH's short sequences saves most of the work (a state is
    p x n per head, far more than the few outputs). Computed in float32 with autocast off,
    because cumulative sums of decays under bf16 lose the small differences that matter.
    """
    b, l, h, p, g, n = _check_scan_inputs(x, dt, A, B, C)
    if chunk_size < 0:
        raise InputError(f"ssd: chunk_size must be >= 0 (0 = whole sequence), got {chunk_size}")
    out_dtype = x.dtype
    cl = l if chunk_size == 0 or chunk_size > l else chunk_size
    cl = max(cl, 1)
    with torch.autocast(device_type=x.device.type, enabled=False):
        x, dt, A, B, C = (t.float() for t in (x, dt, A, B, C))
        xdt = x * dt.unsqueeze(-1)  # discretised input  (b, l, h, p)
        adt = dt * A  # log of the per-step decay       (b, l, h)
        pad = (-l) % cl
        if pad:  # zero input and zero log-decay after the end leave the real outputs and the state unchanged
            xdt = F.pad(xdt, (0, 0, 0, 0, 0, pad))
            adt = F.pad(adt, (0, 0, 0, pad))
            B = F.pad(B, (0, 0, 0, 0, 0, pad))
            C = F.pad(C, (0, 0, 0, 0, 0, pad))
        c = (l + pad) // cl
        hg = h // g
        # chunked views; heads are split as (groups, heads per group) so B/C broadcast without copies
        X = xdt.reshape(b, c, cl, g, hg, p)
        Bc = B.reshape(b, c, cl, g, n)
        Cc = C.reshape(b, c, cl, g, n)
        Ac = adt.reshape(b, c, cl, h).permute(0, 3, 1, 2)  # (b, h, c, cl)
        a_cum = torch.cumsum(Ac, dim=-1)  # (b, h, c, cl)

        # 1. intra-chunk outputs: masked "attention" (C_l . B_s) * decay(s -> l) applied to X_s
        decay = torch.exp(segsum(Ac)).reshape(b, g, hg, c, cl, cl)  # [.., l, s]
        cb = torch.einsum("bclgn,bcsgn->bcgls", Cc, Bc)  # (b, c, g, cl, cl)
        scores = cb.unsqueeze(3) * decay.permute(0, 3, 1, 2, 4, 5)  # (b, c, g, hg, cl, cl)
        y_diag = torch.matmul(scores, X.permute(0, 1, 3, 4, 2, 5))  # (b, c, g, hg, cl, p)

        y = y_diag.permute(0, 1, 4, 2, 3, 5)  # (b, c, cl, g, hg, p)
        if c == 1 and initial_state is None and not return_final_state:
            return y.reshape(b, cl, h, p)[:, :l].to(out_dtype), None

        # 2. state contributed by each chunk, decayed to the chunk's end
        to_end = torch.exp(a_cum[..., -1:] - a_cum).reshape(b, g, hg, c, cl).permute(0, 3, 4, 1, 2)
        states = torch.einsum("bclgjp,bclgn->bcgjpn", X * to_end.unsqueeze(-1), Bc)  # (b, c, g, hg, p, n)
        states = states.reshape(b, c, h, p, n)

        # 3. recurrence over chunk boundaries (a small c+1 by c+1 decay matrix per head)
        if initial_state is None:
            init = states.new_zeros(b, 1, h, p, n)
        else:
            if initial_state.shape != (b, h, p, n):
                raise InputError(f"ssd: initial_state must be {(b, h, p, n)}, got {tuple(initial_state.shape)}")
            init = initial_state.float().unsqueeze(1)
        states = torch.cat([init, states], dim=1)  # (b, c+1, h, p, n)
        chunk_decay = torch.exp(segsum(F.pad(a_cum[..., -1], (1, 0))))  # (b, h, c+1, c+1)
        carried = torch.einsum("bhzc,bchpn->bzhpn", chunk_decay, states)
        prev_states, final_state = carried[:, :-1], carried[:, -1]

        # 4. contribution of the state entering each chunk to that chunk's outputs
        from_start = torch.exp(a_cum).reshape(b, g, hg, c, cl).permute(0, 3, 4, 1, 2)  # (b, c, cl, g, hg)
        y_off = torch.einsum("bclgn,bcgjpn->bclgjp", Cc, prev_states.reshape(b, c, g, hg, p, n))
        y_off = y_off * from_start.unsqueeze(-1)

        y = (y + y_off).reshape(b, c * cl, h, p)[:, :l]
    return y.to(out_dtype), (final_state if return_final_state else None)


def ssd_reference(x: Tensor, dt: Tensor, A: Tensor, B: Tensor, C: Tensor,
                  initial_state: Tensor | None = None, dtype: torch.dtype = torch.float64) -> tuple[Tensor, Tensor]:
    """The SSD recurrence one time step at a time (slow; the ground truth for tests and benchmarks).

    Same arguments and results as :func:`ssd_scan`; ``dtype`` is the working precision (float64 by
    default so that it is a trustworthy reference; benchmarks time it in float32).
    """
    b, l, h, p, g, n = _check_scan_inputs(x, dt, A, B, C)
    hg = h // g
    x, dt, A, B, C = (t.to(dtype) for t in (x, dt, A, B, C))
    state = x.new_zeros(b, h, p, n) if initial_state is None else initial_state.to(dtype).clone()
    Bh = B.repeat_interleave(hg, dim=2)  # (b, l, h, n)
    Ch = C.repeat_interleave(hg, dim=2)
    ys = []
    for t in range(l):
        decay = torch.exp(dt[:, t] * A)  # (b, h)
        state = decay[..., None, None] * state + (dt[:, t, :, None] * x[:, t])[..., None] * Bh[:, t, :, None, :]
        ys.append(torch.einsum("bhpn,bhn->bhp", state, Ch[:, t]))
    y = torch.stack(ys, dim=1) if ys else x.new_zeros(b, 0, h, p)
    return y.float(), state.float()


class RMSNorm(nn.Module):
    """Root-mean-square norm with a learned scale (no centring, no bias), as in Mamba."""

    def __init__(self, dim: int, eps: float = 1e-5) -> None:
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(dim))

    def forward(self, x: Tensor) -> Tensor:
        return x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + self.eps) * self.weight


class SSD(nn.Module):
    """Selective state-space layer: input-dependent ``dt``, ``B``, ``C`` from one projection of x.

    Parameter names follow the WSCH/Mamba-2 reference (``x_proj``, ``dt_bias``, ``A_log``, ``D``)
    so released weights map one to one. ``-A`` is drawn uniformly from ``A_init_range`` per head
    (stored as its log) and ``dt_bias`` starts at 0, as in WSCH.
    """

    def __init__(self, d_model: int, d_state: int = 64, headdim: int = 128, ngroups: int = 1,
                 chunk_size: int = 0, A_init_range: tuple[float, float] = (1.0, 16.0)) -> None:
        super().__init__()
        if d_model % headdim:
            raise InputError(f"SSD: d_model ({d_model}) must be a multiple of headdim ({headdim})")
        self.d_model, self.d_state, self.headdim, self.ngroups = d_model, d_state, headdim, ngroups
        self.nheads = d_model // headdim
        if self.nheads % ngroups:
            raise InputError(f"SSD: heads ({self.nheads}) must be a multiple of ngroups ({ngroups})")
        self.chunk_size = chunk_size
        self.x_proj = nn.Linear(d_model, self.nheads + 2 * ngroups * d_state, bias=False)
        self.dt_bias = nn.Parameter(torch.zeros(self.nheads))
        lo, hi = A_init_range
        self.A_log = nn.Parameter(torch.empty(self.nheads).uniform_(lo, hi).log())
        self.D = nn.Parameter(torch.ones(self.nheads))

    def parameters_for_scan(self, x: Tensor) -> tuple[Tensor, Tensor, Tensor, Tensor, Tensor]:
        """(x per head, dt, A, B, C) as the scan functions take them; shared by forward and tests."""
        b, l, _ = x.shape
        dt, B, C = torch.split(self.x_proj(x), [self.nheads, self.ngroups * self.d_state,
                                                self.ngroups * self.d_state], dim=-1)
        dt = F.softplus(dt + self.dt_bias)
        A = -torch.exp(self.A_log.float())
        return (x.reshape(b, l, self.nheads, self.headdim), dt, A,
                B.reshape(b, l, self.ngroups, self.d_state), C.reshape(b, l, self.ngroups, self.d_state))

    def forward(self, x: Tensor) -> Tensor:
        if x.dim() != 3 or x.shape[-1] != self.d_model:
            raise InputError(f"SSD: expected (batch, length, {self.d_model}), got {tuple(x.shape)}")
        xh, dt, A, B, C = self.parameters_for_scan(x)
        y, _ = ssd_scan(xh, dt, A, B, C, self.chunk_size, return_final_state=False)
        y = y + xh * self.D.to(y.dtype)[:, None]
        return y.reshape(x.shape)


class Mamba2Block(nn.Module):
    """Pre-norm Mamba-2 style mixer with residual, laid out as in WSCH's encoder.

    RMSNorm -> Linear H -> 2*(E*H) split into x and gate z -> causal grouped conv1d on x (kernel
    ``d_conv``, ``groups=dim`` over E*H channels, no activation, as in WSCH) -> SSD -> x * SiLU(z)
    -> Linear E*H -> H (with bias) -> + input.
    """

    def __init__(self, dim: int, expand: int = 2, d_state: int = 64, headdim: int = 128, d_conv: int = 4,
                 chunk_size: int = 0, norm_eps: float = 1e-5) -> None:
        super().__init__()
        inner = expand * dim
        self.d_conv = d_conv
        self.norm = RMSNorm(dim, eps=norm_eps)
        self.in_proj = nn.Linear(dim, 2 * inner, bias=False)
        self.conv = nn.Conv1d(inner, inner, kernel_size=d_conv, groups=dim, padding=d_conv - 1, bias=False)
        self.ssd = SSD(inner, d_state=d_state, headdim=headdim, chunk_size=chunk_size)
        self.out_proj = nn.Linear(inner, dim, bias=True)

    def forward(self, x: Tensor) -> Tensor:
        length = x.shape[1]
        u, z = self.in_proj(self.norm(x)).chunk(2, dim=-1)
        u = self.conv(u.transpose(1, 2))[..., :length].transpose(1, 2)  # left padding only -> causal
        u = self.ssd(u) * F.silu(z)
        return x + self.out_proj(u)

