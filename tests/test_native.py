"""The compiled pass 1 of the tiled position-first search (clab/models/csrc/tile_group_maxima.cpp) against
embedding_bag + amax, bit for bit, and its guards: the build check, bad inputs, a failed build."""
from __future__ import annotations

import pytest
import torch

from clab.models import native


@pytest.fixture
def kernel():
    k = native.tile_group_maxima()
    if k is None:
        pytest.skip('the compiled search kernel is not available here (no AVX-512 or no compiler)')
    return k


def _case(gen, tiles, units, points, taps):
    table = torch.randn(tiles, units, native.TILE, generator=gen)
    local = torch.randint(0, units, (points, taps), generator=gen)
    weight = torch.rand(points, taps, generator=gen)
    weight[::13] = 0
    return table, local, weight


@pytest.mark.parametrize('threads', [1, 2])
def test_kernel_is_embedding_bag_and_amax_bitwise(kernel, threads):
    """A 608x1008-sized tile stack (19 tiles of 2,394 rows), small and odd sizes, 16 and 5 taps, on one and
    two threads."""
    gen = torch.Generator().manual_seed(0)
    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        for tiles, units, points, taps in [(19, 2394, 1500, 16), (3, 7, 65, 16), (1, 1, 1, 16), (2, 50, 33, 5)]:
            table, local, weight = _case(gen, tiles, units, points, taps)
            got = kernel(table, local, weight)
            assert got.shape == (points, 2 * tiles)
            assert torch.equal(got, native.tile_maxima_by_bags(table, local, weight, chunk=1000))
    finally:
        torch.set_num_threads(before)


def test_kernel_refuses_bad_inputs(kernel):
    gen = torch.Generator().manual_seed(1)
    table, local, weight = _case(gen, 2, 10, 8, 16)
    with pytest.raises(RuntimeError, match='outside the table'):
        kernel(table, local + 10, weight)
    with pytest.raises(RuntimeError, match='outside the table'):
        kernel(table, local - 11, weight)
    with pytest.raises(RuntimeError, match=r'Tensor\[n_tiles, U, 128\]'):
        kernel(table[..., :64], local, weight)
    with pytest.raises(RuntimeError, match='float32'):
        kernel(table.double(), local, weight.double())
    with pytest.raises(RuntimeError, match=r'Tensor\[P, T\]'):
        kernel(table, local, weight[:, :5])


def test_the_build_check_rejects_a_kernel_one_ulp_off(kernel):
    assert native._reproduces_bags(kernel)

    def off(*args):
        out = kernel(*args)
        return torch.nextafter(out, torch.full_like(out, float('inf')))

    assert not native._reproduces_bags(off)


def test_a_failed_build_leaves_the_torch_ops(monkeypatch):
    import torch.utils.cpp_extension as cpp_extension

    def fail(*args, **kwargs):
        raise RuntimeError('Error building extension\nno compiler found')

    monkeypatch.setattr(cpp_extension, 'load', fail)
    native.tile_group_maxima.cache_clear()
    try:
        with pytest.warns(RuntimeWarning, match='could not be built .*no compiler found.*keeps torch ops'):
            assert native.tile_group_maxima() is None
    finally:
        native.tile_group_maxima.cache_clear()
