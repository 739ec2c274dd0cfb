"""CPU kernels of the kit compiled at first use (``torch.utils.cpp_extension``), each checked against the
torch ops it replaces before it is used.

:func:`tiled_top` is the tiled position-first search's top-k in one pass over the table tiles
(``csrc/tiled_search.cpp``, in AVX-512 and in AVX2 + FMA code, the best that the CPU runs, see
:func:`cpu_isas`): each point's 16-tap bag over a
tile stays in registers and updates the point's running top values only from the columns that beat them;
nothing of the bags is written. The torch version (:func:`tile_maxima_by_bags`, then
:func:`tile_top_by_ops`) writes every bag, reads them back for the group maxima, sums the best groups'
bags again and runs three top-k calls. The extension is built once per machine and kernel version into
torch's extension cache (``TORCH_EXTENSIONS_DIR``, by default under ``~/.cache``; ``scripts/install.sh``
builds it, otherwise the first use does). The kernel is None, with one warning, where it cannot be built
(no C++ compiler) or where its results differ from the torch ops on this build, and silently on CPUs
without either instruction set (or off x86-64); the search then keeps the torch ops. :func:`tiled_top`
gives the same bits in both sets (a lane's fused multiply-add is one operation in both); ``isa`` picks
one, e.g. for the tests.

:func:`bag_logits` (the same extension) is TRoI's attention logit of the cached path: per point its embed
gathered as a bag of embed-tap rows, plus the bias, dotted with the key's embed per block of channels,
without writing the embeds (the torch version, :func:`bag_logits_by_ops`, writes them, adds the bias,
multiplies and sums). Its sums of the products run in another order than torch's, so its check allows float
rounding; it is None in the same cases as :func:`tiled_top`.
"""
from __future__ import annotations

import contextlib
import functools
import hashlib
import os
import platform
import time
import warnings
from typing import Callable

import torch
import torch.nn.functional as F
from torch import Tensor

CSRC = os.path.join(os.path.dirname(os.path.abspath(__file__)), 'csrc')
#: the kernel's tile and group widths (CPU_TABLE_TILE and TOPK_GROUP of the search)
TILE, GROUP = 128, 64


def tile_maxima_by_bags(table: Tensor, local: Tensor, weight: Tensor, chunk: int) -> Tensor:
    """Pass 1 with torch ops: ``embedding_bag`` of up to ``chunk`` points on one tile at a time, then the
    maxima of its ``GROUP``-column groups.

    Args:
        table: Tensor[n_tiles, U, tile], tile a multiple of ``GROUP``.
        local, weight: Tensor[P, T], the points' taps as rows of the table and their weights.
        chunk: points per ``embedding_bag`` call.

    Returns:
        Tensor[P, n_tiles * tile // GROUP], the group maxima, groups in column order.
    """
    tiles, _, tile = table.shape
    points, per_tile = local.size(0), tile // GROUP
    maxima = table.new_empty(points, tiles * per_tile)
    for t in range(tiles):
        for p0 in range(0, points, chunk):
            p1 = min(points, p0 + chunk)
            sim = F.embedding_bag(local[p0:p1], table[t], per_sample_weights=weight[p0:p1],
                                  mode='sum')  # (p, tile)
            torch.amax(sim.view(p1 - p0, per_tile, GROUP), dim=2,
                       out=maxima[p0:p1, t * per_tile:(t + 1) * per_tile])
    return maxima


def tile_top_by_ops(table: Tensor, local: Tensor, weight: Tensor, maxima: Tensor,
                    kept: int) -> tuple[Tensor, Tensor]:
    """Pass 2 with torch ops: the bags summed again over each point's ``min(kept, G)`` groups with the largest
    ``maxima`` (``GROUP``-column rows of the same tiles), then the top ``kept`` of those values.

    Args:
        table: Tensor[n_tiles, U, tile]; local, weight: Tensor[P, T]; maxima: Tensor[P, G], pass 1's result.
        kept: how many to keep, at most the number of columns.

    Returns:
        values and columns, Tensor[P, kept] each, values in descending order. Holds P x kept x ``GROUP``
        values and x T indices at once (11 MB and 5.6 MB at 608x1008 with kept = 3, T = 16).
    """
    tiles, units, tile = table.shape
    points, per_tile = local.size(0), tile // GROUP
    chosen = min(kept, maxima.size(1))
    best = maxima.topk(chosen, dim=1).indices  # (P, chosen) groups
    # group g of key row u is row ((g // per_tile) * U + u) * per_tile + g % per_tile of the table seen as
    # GROUP-column rows
    first = (best // per_tile) * (units * per_tile) + best % per_tile
    bags = (first[:, :, None] + local[:, None, :] * per_tile).view(-1, local.size(1))
    members = F.embedding_bag(bags, table.view(-1, GROUP), per_sample_weights=weight.repeat_interleave(chosen, dim=0),
                              mode='sum').view(points, chosen * GROUP)
    return top_of_members(members, best, kept, GROUP)


def top_of_members(members: Tensor, best: Tensor, kept: int, group: int) -> tuple[Tensor, Tensor]:
    """The last step of a grouped top-k: the top ``kept`` of the chosen groups' members and their columns.

    Args:
        members: Tensor[R, chosen * group], the values of groups ``best`` side by side.
        best: Tensor[R, chosen] long, the chosen groups (group g holds columns g * group .. g * group + group - 1).
        kept: how many to keep, at most ``chosen * group``.
        group: columns per group.

    Returns:
        values and columns, Tensor[R, kept] each, values in descending order.
    """
    values, j = members.topk(kept, dim=1)
    index = best.gather(1, torch.div(j, group, rounding_mode='floor')) * group
    return values, index.add_(j % group)


#: the kernels' instruction sets, best first: AVX-512 (F), AVX2 with FMA
ISAS = ('avx512', 'avx2')


def cpu_isas() -> tuple[str, ...]:
    """The kernels' instruction sets (of :data:`ISAS`) that this CPU runs, best first, as torch's own
    dispatch level sees it (``ATEN_CPU_CAPABILITY=avx2`` limits both): ``('avx512', 'avx2')``,
    ``('avx2',)`` or ``()`` (off x86-64, or below AVX2, where the torch ops stay)."""
    if platform.machine().lower() not in ('x86_64', 'amd64'):
        return ()
    level = torch.backends.cpu.get_cpu_capability().upper()
    if level.startswith('AVX512'):
        return ISAS
    return ('avx2',) if level.startswith('AVX2') else ()


def _chosen_isa(isa: str | None) -> str | None:
    """``isa``, or the best that this CPU runs where it is None; None where the CPU does not run it."""
    if isa is not None and isa not in ISAS:
        raise ValueError(f'isa must be one of {ISAS} or None, not {isa!r}')
    runs = cpu_isas()
    if isa is None:
        return runs[0] if runs else None
    return isa if isa in runs else None


def _build_name(sources: list[str]) -> str:
    """The extension's name in torch's cache: one per kernel source text (all of ``sources``, the included
    vector code too) and torch version, so that checkouts of other versions neither rebuild it nor load each
    other's build."""
    digest = hashlib.sha1(torch.__version__.encode())
    for source in sources:
        with open(source, 'rb') as f:
            digest.update(f.read())
    return f'clab_tiled_search_{digest.hexdigest()[:12]}'


#: a build lock older than this is left by a process that died while building (a build takes seconds)
STALE_LOCK_SECONDS = 600


def _remove_stale_lock(name: str) -> None:
    """Remove the build's lock file when it is older than ``STALE_LOCK_SECONDS``: torch waits on a lock
    without a time limit, so a build interrupted once (a stopped notebook cell) would otherwise hang every
    later first use."""
    from torch.utils.cpp_extension import _get_build_directory
    lock = os.path.join(_get_build_directory(name, verbose=False), 'lock')
    try:
        age = time.time() - os.path.getmtime(lock)
    except OSError:
        return
    if age > STALE_LOCK_SECONDS:
        warnings.warn(f'clab: removing a stale build lock of the compiled search kernel ({lock}, '
                      f'{age / 60:.0f} min old)', RuntimeWarning, stacklevel=3)
        with contextlib.suppress(OSError):
            os.remove(lock)


@functools.lru_cache(maxsize=1)
def _module():
    """The built extension (``csrc/tiled_search.cpp`` with ``csrc/tiled_search_simd.inc``), or None on a
    CPU that runs none of :data:`ISAS` (silently: the torch ops, as designed) or where it cannot be built
    (with a warning)."""
    if not cpu_isas():
        return None
    source = os.path.join(CSRC, 'tiled_search.cpp')
    try:
        from torch.utils.cpp_extension import load
        name = _build_name([source, os.path.join(CSRC, 'tiled_search_simd.inc')])
        _remove_stale_lock(name)
        module = load(name=name, sources=[source], extra_cflags=['-O3', '-fopenmp'],
                      extra_ldflags=['-fopenmp'], verbose=False)
    except Exception as exc:  # no compiler, no ninja, a failed build: the torch ops stay
        message = str(exc).strip().splitlines()
        warnings.warn(f'clab: the compiled search kernel could not be built ({type(exc).__name__}: '
                      f'{message[-1] if message else ""}); the position-first search keeps torch ops (slower, '
                      'the same values)', RuntimeWarning, stacklevel=3)
        return None
    return module


def _module_for(isa: str | None):
    """The built extension where ``isa`` (a chosen set, or None) is given and this CPU runs it; else None."""
    module = _module() if isa is not None else None
    return module if module is not None and module.supports(isa) else None


def tiled_top(isa: str | None = None) -> Callable[[Tensor, Tensor, Tensor, int], tuple[Tensor, Tensor]] | None:
    """The compiled search top-k for float32 tables of ``TILE``-column tiles, ``(table, local, weight,
    kept) -> (values, columns)``: :func:`tile_maxima_by_bags` then :func:`tile_top_by_ops` in one pass,
    the same values bit for bit, equal values in column order (the lowest first; ``topk`` has its own
    order, so where values tie exactly inside the kept top their positions may come in another order and
    sums over them round differently in the last bit), NaN ranked above every number as by ``topk``; or
    None (see the module docstring). ``isa``: one of :data:`ISAS` (None where this CPU does not run it), by
    default the best that it runs."""
    return _tiled_top(_chosen_isa(isa))


@functools.lru_cache(maxsize=None)
def _tiled_top(isa: str | None):
    """:func:`tiled_top` for a chosen set (or None): built and checked once per set."""
    module = _module_for(isa)
    if module is None:
        return None

    def kernel(table: Tensor, local: Tensor, weight: Tensor, kept: int) -> tuple[Tensor, Tensor]:
        values, columns = module.tiled_top(table, local, weight, kept, isa)
        return values, columns

    if not _reproduces_torch_ops(kernel):
        warnings.warn(f'clab: the compiled search kernel ({isa}) does not reproduce the torch ops on this build; the '
                      'position-first search keeps torch ops (slower, the same values)', RuntimeWarning,
                      stacklevel=2)
        return None
    return kernel


def bag_logits_by_ops(table: Tensor, index: Tensor, weight: Tensor, offsets: Tensor, bias: Tensor | None,
                      key: Tensor, blocks: int) -> Tensor:
    """Per bag and block of channels, the dot product of the bag plus ``bias`` with the bag's key row, by torch
    ops (``embedding_bag``, ``add_``, ``mul_``, ``sum``).

    Args:
        table: Tensor[R, C]; index, weight: Tensor[E], the bags' rows and weights; offsets: Tensor[P], where
            each bag starts in ``index``; bias: Tensor[C] or None; key: Tensor[P, C]; blocks: B, dividing C.

    Returns:
        Tensor[P, B].
    """
    points, channels = key.shape
    out = F.embedding_bag(index, table, offsets=offsets, per_sample_weights=weight, mode='sum')  # (P, C)
    if bias is not None:
        out = out.add_(bias)
    return out.view(points, blocks, channels // blocks).mul_(key.view(points, blocks, -1)).sum(dim=2)


def bag_logits(isa: str | None = None) -> Callable[[Tensor, Tensor, Tensor, Tensor, Tensor | None, Tensor, int],
                                                   Tensor] | None:
    """The compiled :func:`bag_logits_by_ops` for float32 CPU tensors whose blocks are a multiple of 16
    channels, ``(table, index, weight, offsets, bias, key, blocks) -> Tensor[P, B]``: the bags written
    nowhere, their sums those of ``embedding_bag``, the dot products summed in another order (within float
    rounding of the torch ops, checked on this build before it is used); or None (see the module
    docstring). ``isa`` as for :func:`tiled_top`."""
    return _bag_logits(_chosen_isa(isa))


@functools.lru_cache(maxsize=None)
def _bag_logits(isa: str | None):
    """:func:`bag_logits` for a chosen set (or None): built and checked once per set."""
    module = _module_for(isa)
    if module is None:
        return None

    def kernel(table, index, weight, offsets, bias, key, blocks):
        return module.bag_logits(table, index, weight, offsets, table.new_empty(0) if bias is None else bias,
                                 key, blocks, isa)

    if not _bag_logits_match_torch_ops(kernel):
        warnings.warn(f'clab: the compiled attention-logit kernel ({isa}) does not match the torch ops on this '
                      'build; TRoI keeps torch ops (slower, the same values up to rounding)', RuntimeWarning,
                      stacklevel=2)
        return None
    return kernel


def _bag_logits_match_torch_ops(kernel) -> bool:
    """Whether ``kernel`` matches :func:`bag_logits_by_ops` within float rounding on random bags of 0 to 18
    entries (an empty one among them), 4 blocks of 128 and 2 of 48 channels, with and without a bias."""
    gen = torch.Generator().manual_seed(0)
    for channels, blocks in ((512, 4), (96, 2)):
        table = torch.randn(60, channels, generator=gen)
        counts = torch.randint(0, 19, (40,), generator=gen)
        counts[3] = 0
        offsets = F.pad(counts.cumsum(0), (1, 0))[:-1]
        index = torch.randint(0, 60, (int(counts.sum()),), generator=gen)
        weight = torch.rand(index.numel(), generator=gen)
        key = torch.randn(40, channels, generator=gen)
        for bias in (None, torch.randn(channels, generator=gen)):
            got = kernel(table, index, weight, offsets, bias, key, blocks)
            want = bag_logits_by_ops(table, index, weight, offsets, bias, key, blocks)
            if got.shape != want.shape or not torch.allclose(got, want, rtol=1e-5, atol=1e-5 * float(want.abs().max())):
                return False
    return True


def _random_case(seed: int = 0) -> list[tuple[Tensor, Tensor, Tensor]]:
    """Random tables for the checks: 3 tiles of 40 rows with 200 points of 16 taps (repeated taps, all-zero
    weights and zero-weight taps among them), and a one-row table."""
    gen = torch.Generator().manual_seed(seed)
    table = torch.randn(3, 40, TILE, generator=gen)
    local = torch.randint(0, 40, (200, 16), generator=gen)
    local[::11, 1] = local[::11, 0]
    weight = torch.rand(200, 16, generator=gen)
    weight[::17] = 0
    weight[::5, 3:6] = 0  # zero-weight taps among others (the kernel skips them)
    return [(table, local, weight), (table[:, :1].contiguous(), torch.zeros(5, 16, dtype=torch.long), weight[:5])]


def _reproduces_torch_ops(kernel) -> bool:
    """Whether ``kernel`` gives bitwise the values of :func:`tile_maxima_by_bags` + :func:`tile_top_by_ops`
    on :func:`_random_case` with kept 1, 3 and 10 (more than the 6 groups), and their columns in the rows
    without ties (:func:`untied_rows`)."""
    for table, local, weight in _random_case():
        maxima = tile_maxima_by_bags(table, local, weight, chunk=64)
        for kept in (1, 3, 10):
            values, columns = kernel(table, local, weight, kept)
            want_values, want_columns = tile_top_by_ops(table, local, weight, maxima, kept)
            rows = untied_rows(table, local, weight, maxima, kept)
            if not (torch.equal(values, want_values) and torch.equal(columns[rows], want_columns[rows])):
                return False
    return True


def untied_rows(table: Tensor, local: Tensor, weight: Tensor, maxima: Tensor, kept: int) -> Tensor:
    """Tensor[P] bool: the points whose ``kept + 1`` largest bag values (:func:`tile_top_by_ops`) all differ,
    so that the kept columns do not depend on how a top-k orders equal values."""
    more = min(kept + 1, table.size(0) * table.size(2))
    values = tile_top_by_ops(table, local, weight, maxima, more)[0]
    return (values[:, :-1] > values[:, 1:]).all(dim=1)
