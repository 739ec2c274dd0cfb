"""The compiled kernels (clab/models/csrc/tiled_search.cpp) against the torch ops they replace: the tiled
position-first search's one-pass top-k bit for bit, the attention-logit bags within float rounding; and
their guards: the build checks, bad inputs, a failed build."""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from clab.models import native


def _needs(isa):
    if isa not in native.cpu_isas():
        pytest.skip(f'this CPU does not run {isa} (it runs {", ".join(native.cpu_isas()) or "neither set"}): '
                    'torch ops there')


@pytest.fixture(params=native.ISAS)
def kernel(request):
    """The kernel in each instruction set that this CPU runs; there it must build and pass its check (the
    kit's install needs a C++ compiler for mmcv anyway)."""
    _needs(request.param)
    k = native.tiled_top(request.param)
    assert k is not None
    return k


def _case(gen, tiles, units, points, taps, integers=False):
    if integers:
        table = torch.randint(-3, 4, (tiles, units, native.TILE), generator=gen).float()
        weight = torch.randint(0, 3, (points, taps), generator=gen).float()
    else:
        table = torch.randn(tiles, units, native.TILE, generator=gen)
        weight = torch.rand(points, taps, generator=gen)
    local = torch.randint(0, units, (points, taps), generator=gen)
    weight[::13] = 0
    return table, local, weight


def _torch_ops(table, local, weight, kept):
    maxima = native.tile_maxima_by_bags(table, local, weight, chunk=1000)
    return (*native.tile_top_by_ops(table, local, weight, maxima, kept),
            native.untied_rows(table, local, weight, maxima, kept))


@pytest.fixture
def fresh_build():
    """The kernel's build and check run again in the test (their caches cleared), and again after it."""
    caches = (native._module, native._tiled_top, native._bag_logits)  # held: a test may patch the names
    for cached in caches:
        cached.cache_clear()
    yield
    for cached in caches:
        cached.cache_clear()


@pytest.mark.parametrize('threads', [1, 2])
def test_kernel_is_the_torch_ops_bitwise(kernel, threads):
    """A 608x1008-sized tile stack (19 tiles of 2,394 rows), small and odd sizes, 16 and 5 taps, kept 1, 3
    and more than one group's columns, on one and two threads: the values bit for bit, the columns where
    the values are not tied."""
    gen = torch.Generator().manual_seed(0)
    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        for tiles, units, points, taps in [(19, 2394, 1500, 16), (3, 7, 65, 16), (1, 1, 1, 16), (2, 50, 33, 5)]:
            table, local, weight = _case(gen, tiles, units, points, taps)
            for kept in (1, 3, 70):
                values, columns = kernel(table, local, weight, kept)
                want_values, want_columns, rows = _torch_ops(table, local, weight, kept)
                assert values.shape == columns.shape == (points, kept) and columns.dtype == torch.long
                assert torch.equal(values, want_values)
                # (every 13th point has zero weights: all its values tie; the 1-point case has only that one)
                assert not bool(rows[::13].any()) and (bool(rows.any()) or points == 1)
                assert torch.equal(columns[rows], want_columns[rows])
    finally:
        torch.set_num_threads(before)


def test_equal_values_come_in_column_order(kernel):
    """Integer tables and weights: many equal bag values. The kept columns are those of a stable sort of all
    the bag values (descending), and the values are topk's."""
    table, local, weight = _case(torch.Generator().manual_seed(2), 4, 30, 400, 16, integers=True)
    sims = F.embedding_bag(local, table.permute(1, 0, 2).reshape(30, -1), per_sample_weights=weight, mode='sum')
    for kept in (1, 5, 130):
        values, columns = kernel(table, local, weight, kept)
        assert torch.equal(values, _torch_ops(table, local, weight, kept)[0])
        assert torch.equal(columns, sims.sort(dim=1, descending=True, stable=True).indices[:, :kept])
    zero = weight.sum(dim=1) == 0  # every value 0: the first columns
    assert bool(zero.any()) and torch.equal(columns[zero], torch.arange(130).expand(int(zero.sum()), 130))


def test_kernel_refuses_bad_inputs(kernel):
    table, local, weight = _case(torch.Generator().manual_seed(1), 2, 10, 8, 16)
    for bad in (local + 10, local - 11):
        with pytest.raises(RuntimeError, match='outside the table'):
            kernel(table, bad, weight, 3)
    with pytest.raises(RuntimeError, match=r'Tensor\[n_tiles, U, 128\]'):
        kernel(table[..., :64], local, weight, 3)
    with pytest.raises(RuntimeError, match='float32'):
        kernel(table.double(), local, weight.double(), 3)
    with pytest.raises(RuntimeError, match=r'Tensor\[P, T\]'):
        kernel(table, local, weight[:, :5], 3)
    for kept in (0, 2 * 128 + 1):
        with pytest.raises(RuntimeError, match='kept must be between 1 and the number of columns'):
            kernel(table, local, weight, kept)


def test_the_build_check_rejects_kernels_that_differ(kernel):
    assert native._reproduces_torch_ops(kernel)

    def one_ulp_up(*args):
        values, columns = kernel(*args)
        return torch.nextafter(values, torch.full_like(values, float('inf'))), columns

    def last_column_wrong(*args):
        values, columns = kernel(*args)
        return values, columns.clone().index_fill_(1, torch.tensor([columns.size(1) - 1]), 0)

    assert not native._reproduces_torch_ops(one_ulp_up)
    assert not native._reproduces_torch_ops(last_column_wrong)


def test_a_failed_build_leaves_the_torch_ops(monkeypatch, fresh_build):
    import torch.utils.cpp_extension as cpp_extension

    def fail(*args, **kwargs):
        raise RuntimeError('Error building extension\nno compiler found')

    monkeypatch.setattr(cpp_extension, 'load', fail)
    monkeypatch.setattr(native, 'cpu_isas', lambda: ('avx2',))  # a CPU where the build is tried
    with pytest.warns(RuntimeWarning, match='could not be built .*no compiler found.*keeps torch ops'):
        assert native.tiled_top() is None
    assert native.bag_logits() is None


def test_nan_features_give_nan_values_as_the_torch_ops(kernel):
    """A NaN in a table row makes the bags that read it with a nonzero weight NaN in that column: the kernel
    ranks NaN above every number, as topk does, so those points keep the NaN first and then the same
    numbers as the torch ops. Taps of weight 0 are skipped: a point that reads the row only with weight 0
    gets the numbers of the same table with that entry finite (torch's 0 * NaN would make it NaN)."""
    table, local, weight = _case(torch.Generator().manual_seed(3), 3, 40, 300, 16)
    weight[::3][local[::3] == 5] = 0  # every third point reads row 5 only with weight 0
    table[1, 5, 17] = float('nan')
    values, columns = kernel(table, local, weight, 3)
    reads = ((local == 5) & (weight != 0)).any(dim=1)
    only_zero = (local == 5).any(dim=1) & ~reads
    assert bool(reads.any()) and bool(only_zero.any())
    assert bool(torch.isnan(values[reads, 0]).all())
    assert not bool(torch.isnan(values[~reads]).any())
    want_values, want_columns, _ = _torch_ops(table, local, weight, 3)
    assert torch.equal(torch.isnan(values[~only_zero]), torch.isnan(want_values[~only_zero]))
    untouched = ~reads & ~only_zero
    assert torch.equal(values[untouched], want_values[untouched])
    finite = table.clone()
    finite[1, 5, 17] = 0.5
    finite_values = _torch_ops(finite, local, weight, 3)[0]
    assert torch.equal(values[only_zero], finite_values[only_zero])
    assert bool((columns[reads, 0] == 128 + 17).all())


def test_a_cpu_without_the_instruction_sets_means_the_torch_ops_without_a_warning(monkeypatch, recwarn,
                                                                                   fresh_build):
    monkeypatch.setattr(native, 'cpu_isas', lambda: ())
    assert native.tiled_top() is None and native.bag_logits() is None
    assert not [w for w in recwarn if 'clab' in str(w.message)]


def test_the_best_instruction_set_is_the_default_and_one_the_cpu_lacks_gives_none(monkeypatch, fresh_build):
    """On a CPU that runs AVX2 only (as this one is made to look), the default kernels run the AVX2 code,
    one the CPU lacks is None, and an unknown set is refused; each set is built and checked once."""
    _needs('avx2')
    module = native._module()
    names = []

    class Spy:
        def supports(self, isa):
            return module.supports(isa)

        def tiled_top(self, *args):
            names.append(args[-1])
            return module.tiled_top(*args)

        def bag_logits(self, *args):
            names.append(args[-1])
            return module.bag_logits(*args)

    monkeypatch.setattr(native, '_module', lambda: Spy())
    monkeypatch.setattr(native, 'cpu_isas', lambda: ('avx2',))
    assert native.tiled_top('avx512') is None and native.bag_logits('avx512') is None
    top, logits = native.tiled_top(), native.bag_logits()
    assert top is not None and logits is not None and set(names) == {'avx2'}  # their checks ran AVX2 code
    assert native.tiled_top('avx2') is top and native.bag_logits(None) is logits  # one build and check a set
    with pytest.raises(ValueError, match="isa must be one of .*'sse'"):
        native.tiled_top('sse')


def test_the_extension_refuses_an_unknown_instruction_set():
    _needs('avx2')
    module = native._module()
    # the extension reads the CPU's own flags; cpu_isas follows torch's dispatch level, which may be lower
    # (ATEN_CPU_CAPABILITY) but never names a set the CPU lacks
    assert module.supports('avx2')
    assert module.supports('avx512') or 'avx512' not in native.cpu_isas()
    table, local, weight = _case(torch.Generator().manual_seed(1), 2, 10, 8, 16)
    with pytest.raises(RuntimeError, match="isa must be 'avx512' or 'avx2', not 'sse'"):
        module.tiled_top(table, local, weight, 3, 'sse')
    if not module.supports('avx512'):
        with pytest.raises(RuntimeError, match='this CPU does not run avx512'):
            module.tiled_top(table, local, weight, 3, 'avx512')


def test_a_kernel_failing_its_check_is_not_used(monkeypatch, fresh_build):
    _needs('avx2')
    monkeypatch.setattr(native, '_reproduces_torch_ops', lambda kernel: False)
    with pytest.warns(RuntimeWarning, match=r'\(avx.*\) does not reproduce the torch ops'):
        assert native.tiled_top() is None


def test_a_stale_build_lock_is_removed_and_a_fresh_one_kept(tmp_path, monkeypatch):
    import os
    import time

    monkeypatch.setenv('TORCH_EXTENSIONS_DIR', str(tmp_path))
    lock = tmp_path / 'some_build' / 'lock'
    lock.parent.mkdir()
    lock.write_text('')
    native._remove_stale_lock('some_build')
    assert lock.exists()
    old = time.time() - native.STALE_LOCK_SECONDS - 60
    os.utime(lock, (old, old))
    with pytest.warns(RuntimeWarning, match='stale build lock'):
        native._remove_stale_lock('some_build')
    assert not lock.exists()


@pytest.fixture(params=native.ISAS)
def logits_kernel(request):
    _needs(request.param)
    k = native.bag_logits(request.param)
    assert k is not None
    return k


def _bags(gen, rows, channels, points, most):
    table = torch.randn(rows, channels, generator=gen)
    counts = torch.randint(0, most + 1, (points,), generator=gen)
    offsets = F.pad(counts.cumsum(0), (1, 0))[:-1]
    index = torch.randint(0, rows, (int(counts.sum()),), generator=gen)
    weight = torch.rand(index.numel(), generator=gen)
    key = torch.randn(points, channels, generator=gen)
    return table, index, weight, offsets, key


@pytest.mark.parametrize('threads', [1, 2])
def test_logits_kernel_matches_the_torch_ops(logits_kernel, threads):
    """The 608x1008 embed-tap table of one map (2,394 x 9 rows of 512) and 980 points of up to 18 entries, 4
    blocks; 192 channels in 3 blocks of 64 and in 1 of 192 (with AVX-512 a part of 64 after one of 128);
    96 channels in 2 blocks of 48 (a part shorter than a pass in both sets); with and without a bias; one
    and two threads: within float rounding of embedding_bag + bias, times the key, summed per block."""
    gen = torch.Generator().manual_seed(0)
    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        for rows, channels, points, blocks in [(2394 * 9, 512, 980, 4), (50, 192, 77, 3), (50, 192, 77, 1),
                                               (50, 96, 77, 2)]:
            table, index, weight, offsets, key = _bags(gen, rows, channels, points, 18)
            for bias in (None, torch.randn(channels, generator=gen)):
                got = logits_kernel(table, index, weight, offsets, bias, key, blocks)
                want = native.bag_logits_by_ops(table, index, weight, offsets, bias, key, blocks)
                assert got.shape == (points, blocks)
                torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5 * float(want.abs().max()))
                empty = torch.cat([offsets[1:], torch.tensor([index.numel()])]) == offsets
                assert bool(empty.any())  # an empty bag is the bias alone against the key
    finally:
        torch.set_num_threads(before)


def test_logits_kernel_refuses_bad_inputs(logits_kernel):
    table, index, weight, offsets, key = _bags(torch.Generator().manual_seed(1), 10, 128, 6, 4)
    with pytest.raises(RuntimeError, match='outside the table'):
        logits_kernel(table, index + 10, weight, offsets, None, key, 4)
    with pytest.raises(RuntimeError, match='offsets must rise'):
        logits_kernel(table, index, weight, offsets.flip(0) + 1, None, key, 4)
    with pytest.raises(RuntimeError, match='multiple of 16'):
        logits_kernel(table, index, weight, offsets, None, key, 16)
    with pytest.raises(RuntimeError, match='float32'):
        logits_kernel(table.double(), index, weight, offsets, None, key, 4)
    with pytest.raises(RuntimeError, match='one per key row'):
        logits_kernel(table, index, weight, offsets[:-1], None, key, 4)


def test_the_logits_check_rejects_a_kernel_that_differs(logits_kernel):
    assert native._bag_logits_match_torch_ops(logits_kernel)
    assert not native._bag_logits_match_torch_ops(lambda *args: logits_kernel(*args) * 1.001)
    assert not native._bag_logits_match_torch_ops(lambda *args: logits_kernel(*args)[:-1])


def test_the_package_data_ships_every_kernel_source():
    """An installed (non-editable) kit must hold every file that the build compiles or includes: each file
    in ``csrc`` matches one of the package-data patterns of ``pyproject.toml``."""
    import fnmatch
    import os
    import tomllib

    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    with open(os.path.join(root, 'pyproject.toml'), 'rb') as f:
        patterns = tomllib.load(f)['tool']['setuptools']['package-data']['clab.models']
    sources = sorted(os.listdir(native.CSRC))
    assert 'tiled_search.cpp' in sources and 'tiled_search_simd.inc' in sources
    assert [s for s in sources if not any(fnmatch.fnmatch(f'csrc/{s}', p) for p in patterns)] == []
