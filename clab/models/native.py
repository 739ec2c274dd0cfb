"""CPU kernels of the kit compiled at first use (``torch.utils.cpp_extension``), each checked bitwise against
the torch ops it replaces before it is used.

:func:`tile_group_maxima` is pass 1 of the tiled position-first search (``csrc/tile_group_maxima.cpp``):
per point and table tile, the maxima of the two 64-column groups of its 16-tap bag, without writing the
bags (AVX-512 code, used on CPUs that have it). It is built once per machine into torch's extension cache (``TORCH_EXTENSIONS_DIR``, by default
under ``~/.cache``; about a minute on 2 cores) and is None, with one warning, where it cannot be built
(no C++ compiler) or where its results differ from ``embedding_bag`` + ``amax`` on this build; the search
then keeps the torch ops.
"""
from __future__ import annotations

import functools
import os
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


@functools.lru_cache(maxsize=1)
def tile_group_maxima() -> Callable[[Tensor, Tensor, Tensor], Tensor] | None:
    """The compiled pass 1 for float32 tables of ``TILE``-column tiles, ``(table, local, weight) ->
    maxima`` as :func:`tile_maxima_by_bags`, or None (see the module docstring)."""
    try:
        from torch.utils.cpp_extension import load
        module = load(name='clab_tile_group_maxima', sources=[os.path.join(CSRC, 'tile_group_maxima.cpp')],
                      extra_cflags=['-O3', '-fopenmp'], extra_ldflags=['-fopenmp'], verbose=False)
    except Exception as exc:  # no compiler, no ninja, a failed build: the torch ops stay
        warnings.warn(f'clab: the compiled search kernel could not be built ({type(exc).__name__}: '
                      f'{str(exc).strip().splitlines()[-1] if str(exc).strip() else ""}); the position-first '
                      'search keeps torch ops (slower, the same results)', RuntimeWarning, stacklevel=2)
        return None
    if not module.available():  # a CPU without AVX-512: the torch ops, as designed
        return None
    kernel = module.tile_group_maxima
    if not _reproduces_bags(kernel):
        warnings.warn('clab: the compiled search kernel does not reproduce embedding_bag bitwise on this '
                      'build; the position-first search keeps torch ops', RuntimeWarning, stacklevel=2)
        return None
    return kernel


def _reproduces_bags(kernel: Callable[[Tensor, Tensor, Tensor], Tensor]) -> bool:
    """Whether ``kernel`` gives bitwise :func:`tile_maxima_by_bags` on random tables: 3 tiles of 40 rows,
    200 points of 16 taps (repeated taps and all-zero weights among them), then a one-row table."""
    gen = torch.Generator().manual_seed(0)
    table = torch.randn(3, 40, TILE, generator=gen)
    local = torch.randint(0, 40, (200, 16), generator=gen)
    local[::11, 1] = local[::11, 0]
    weight = torch.rand(200, 16, generator=gen)
    weight[::17] = 0
    cases = [(table, local, weight), (table[:, :1].contiguous(), torch.zeros(5, 16, dtype=torch.long),
                                      weight[:5])]
    return all(torch.equal(kernel(*case), tile_maxima_by_bags(*case, chunk=64)) for case in cases)
