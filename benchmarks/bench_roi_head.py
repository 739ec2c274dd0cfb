"""Time SelsaRoIHead.simple_test cached vs uncached at TRoI R-50 sizes (random weights and maps).

Usage (from the repository root): python benchmarks/bench_roi_head.py H W   (neck map size, e.g. 38 63)
Each per-frame time is the minimum over 2 runs; wall and process CPU seconds.
"""
import sys, time
import numpy as np
import torch
sys.path.insert(0, '.')
from mmdet.models.builder import MODELS
from tests.test_roi_head import roi_head_cfg
import clab.models.selsa_roi_head  # noqa: F401  (registration)

H, W = int(sys.argv[1]), int(sys.argv[2])
N_PROP, N_REF = 300, 14
torch.manual_seed(0)
head = MODELS.build(roi_head_cfg(channels=512, fc=1024, num_classes=30, sampler_num=256)).eval()
img_h, img_w = H * 16, W * 16

def boxes(n):
    wh = 16 + torch.rand(n, 2) * 200
    xy = torch.rand(n, 2) * (torch.tensor([img_w, img_h]) - wh).clamp(min=1)
    return torch.cat([xy, xy + wh, torch.rand(n, 1)], 1)

def timed(f, repeat=2):
    best = None
    for _ in range(repeat):
        t, c = time.perf_counter(), time.process_time()
        out = f()
        w, c = time.perf_counter() - t, time.process_time() - c
        best = (w, c) if best is None or w < best[0] else best
    return out, best

refs = torch.rand(N_REF, 512, H, W)
key = torch.rand(1, 512, H, W)
ref_props = [boxes(N_PROP) for _ in range(N_REF)]
key_props = boxes(N_PROP)
meta = dict(img_shape=(img_h, img_w, 3), scale_factor=np.ones(4, dtype=np.float32))
print(f'torch threads={torch.get_num_threads()}, neck map {H}x{W}x512, {N_PROP} key proposals, '
      f'{N_REF}+1 reference maps x {N_PROP} proposals', flush=True)
with torch.no_grad():
    unc, (w, c) = timed(lambda: head.simple_test((key,), (torch.cat([refs, key]),), [key_props],
                                                 ref_props + [key_props], [meta]))
    print(f'uncached simple_test: {w:.1f} s wall ({c:.1f} s cpu) per frame', flush=True)
    for taps in (False, True):
        cache, (wp, cp) = timed(lambda: head.prepare_reference_cache((refs,), ref_props,
                                                                     with_embed_taps=taps), 1)
        res, (w, c) = timed(lambda: head.simple_test((key,), None, [key_props], None, [meta],
                                                     ref_cache=cache))
        same = all(a.shape == b.shape for a, b in zip(unc, res))
        diff = max((float(np.abs(a - b).max()) for a, b in zip(unc, res) if len(a) and a.shape == b.shape),
                   default=0.0)
        print(f'cached, embed taps={taps}: prepare_reference_cache {wp:.1f} s wall once per video; '
              f'simple_test {w:.1f} s wall ({c:.1f} s cpu) per frame; same detections {same}, '
              f'max abs diff {diff:.1e}', flush=True)
        del cache
