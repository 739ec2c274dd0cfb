"""The contrastive auxiliary branch (clab.models.contrastive): architecture, NT-Xent value, labels, and the
gradient across two gloo processes versus one process holding the whole batch."""
from __future__ import annotations

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from mmdet.models.builder import MODELS

from clab.models.contrastive import ContrastiveHead, clip_labels

SMALL = dict(in_channels=8, mid_channels=6, hidden_channels=5, out_channels=4, temperature=0.1,
             loss_weight=0.5)


def ntxent_reference(embeddings: torch.Tensor, labels: torch.Tensor, tau: float) -> torch.Tensor:
    """NT-Xent written out from SPEC 1.7: mean over ordered positive pairs (a, p), a != p, of
    -log(exp(s_ap/τ) / (exp(s_ap/τ) + Σ_{n: y_n != y_a} exp(s_an/τ))), s = cosine similarity."""
    z = embeddings.double()
    z = z / z.norm(dim=1, keepdim=True)
    s = z @ z.T / tau
    terms = []
    m = len(labels)
    for a in range(m):
        negatives = [n for n in range(m) if labels[n] != labels[a]]
        for p in range(m):
            if p == a or labels[p] != labels[a]:
                continue
            numerator = torch.exp(s[a, p])
            denominator = numerator + sum(torch.exp(s[a, n]) for n in negatives)
            terms.append(-torch.log(numerator / denominator))
    return torch.stack(terms).mean()


def test_architecture_and_parameter_keys():
    head = MODELS.build(dict(type="ContrastiveHead"))     # the paper's sizes by default
    shapes = {k: tuple(v.shape) for k, v in head.state_dict().items()}
    assert shapes == {
        "channel.0.weight": (512, 1024, 3, 3), "channel.0.bias": (512,),
        "proj.0.weight": (256, 512), "proj.0.bias": (256,),
        "proj.2.weight": (128, 256), "proj.2.bias": (128,),
    }
    assert head.temperature == 0.1 and head.loss_weight == 0.005 and type(head.loss_weight) is float
    small = ContrastiveHead(**SMALL)
    feats = torch.randn(3, 8, 5, 7)
    out = small(feats)
    assert out.shape == (3, 4)
    # conv -> ReLU -> mean over the whole map -> MLP, by hand
    by_hand = torch.relu(torch.nn.functional.conv2d(feats, small.channel[0].weight, small.channel[0].bias,
                                                    padding=1)).mean(dim=(2, 3))
    by_hand = small.proj[2](torch.relu(small.proj[0](by_hand)))
    torch.testing.assert_close(out, by_hand)
    torch.testing.assert_close(small.embed(feats), out)


def test_ntxent_value_matches_independent_formula():
    head = ContrastiveHead(**SMALL)
    embeddings = torch.tensor([[1.0, 0.2, -0.3, 0.5], [0.1, 1.0, 0.4, -0.2], [0.9, 0.1, -0.1, 0.6],
                               [1.1, 0.3, -0.5, 0.2], [-0.2, 0.8, 0.6, 0.0], [0.3, 1.2, 0.1, -0.4]])
    labels = torch.tensor([0, 1, 0, 0, 1, 1])
    expected = ntxent_reference(embeddings, labels, 0.1)
    loss = head.loss(embeddings, labels)
    assert loss.item() == pytest.approx(0.5 * expected.item(), rel=1e-5)
    # other temperatures and weights
    head.loss_weight = 2.0
    head2 = ContrastiveHead(**dict(SMALL, temperature=0.5, loss_weight=2.0))
    assert head2.loss(embeddings, labels).item() == pytest.approx(
        2.0 * ntxent_reference(embeddings, labels, 0.5).item(), rel=1e-5)
    # a single clip has no negatives: the loss is 0
    assert head.loss(embeddings[:3], torch.zeros(3, dtype=torch.long)).item() == 0.0


def test_labels_are_the_clip_index():
    assert clip_labels(2, 2).tolist() == [0, 1, 0, 0, 1, 1]
    assert clip_labels(3, 1, offset=6).tolist() == [6, 7, 8, 6, 7, 8]
    torch.manual_seed(0)
    head = ContrastiveHead(**SMALL)
    key, ref = torch.randn(2, 8, 4, 4), torch.randn(4, 8, 4, 4)
    out = head.forward_train(key, ref)
    assert set(out) == {"loss_cab", "w_cab"}
    embeddings = head(torch.cat([key, ref]))
    expected = 0.5 * ntxent_reference(embeddings, torch.tensor([0, 1, 0, 0, 1, 1]), 0.1)
    assert out["loss_cab"].item() == pytest.approx(expected.item(), rel=1e-5)
    # any other grouping gives another value (the test would notice wrong labels)
    wrong = 0.5 * ntxent_reference(embeddings, torch.tensor([0, 1, 1, 1, 0, 0]), 0.1)
    assert abs(out["loss_cab"].item() - wrong.item()) > 1e-3
    assert out["w_cab"].item() == 0.5 and out["w_cab"].dim() == 0
    # references given as a list of per-clip stacks, and maps of another size than the key frames
    out_list = head.forward_train(key, [ref[:2], ref[2:]])
    assert out_list["loss_cab"].item() == pytest.approx(out["loss_cab"].item(), rel=1e-6)
    out_sizes = head.forward_train(key, torch.randn(4, 8, 6, 3))
    assert torch.isfinite(out_sizes["loss_cab"])


def test_weight_is_read_at_call_time_and_gradients_flow():
    head = ContrastiveHead(**SMALL)
    key = torch.randn(2, 8, 4, 4, requires_grad=True)
    ref = torch.randn(4, 8, 4, 4, requires_grad=True)
    head.loss_weight = 0.0025
    out = head.forward_train(key, ref)
    assert out["w_cab"].item() == pytest.approx(0.0025)
    out["loss_cab"].backward()
    assert key.grad.abs().sum() > 0 and ref.grad.abs().sum() > 0
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in head.parameters())


def test_single_process_makes_no_distributed_call(monkeypatch):
    def forbidden(*args, **kwargs):
        raise AssertionError("torch.distributed called without a process group")

    for name in ("get_world_size", "get_rank", "all_gather", "all_reduce"):
        monkeypatch.setattr(dist, name, forbidden)
    head = ContrastiveHead(**SMALL)
    out = head.forward_train(torch.randn(2, 8, 3, 3), torch.randn(2, 8, 3, 3))
    assert torch.isfinite(out["loss_cab"])


@pytest.mark.parametrize("key_shape, ref_shape, words", [
    ((2, 8, 4, 4), (3, 8, 4, 4), "T >= 1 reference maps per key frame"),
    ((2, 8, 4, 4), (0, 8, 4, 4), "T >= 1 reference maps per key frame"),
    ((2, 16, 4, 4), (4, 16, 4, 4), "in_channels=8"),
    ((2, 8, 4), (4, 8, 4, 4), "Tensor[M, C, h, w]"),
])
def test_shape_errors(key_shape, ref_shape, words):
    head = ContrastiveHead(**SMALL)
    with pytest.raises(ValueError) as err:
        head.forward_train(torch.randn(*key_shape), torch.randn(*ref_shape))
    assert words in str(err.value)


def test_constructor_validation():
    with pytest.raises(ValueError, match="'temperature' must be > 0"):
        ContrastiveHead(temperature=0.0)
    with pytest.raises(ValueError, match="'in_channels' must be a positive int"):
        ContrastiveHead(in_channels=0)


# ------------------------------------------------------------------------------------- two processes
N_GLOBAL, T, PER_RANK = 4, 2, 2


def _global_batch():
    generator = torch.Generator().manual_seed(123)
    key = torch.randn(N_GLOBAL, 8, 3, 3, generator=generator)
    ref = torch.randn(N_GLOBAL * T, 8, 3, 3, generator=generator)
    return key, ref


def _fresh_head():
    torch.manual_seed(7)
    return ContrastiveHead(**SMALL)


def _worker(rank: int, world_size: int, init_file: str, out_dir: str) -> None:
    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=world_size)
    try:
        head = _fresh_head()
        key, ref = _global_batch()
        clips = slice(rank * PER_RANK, (rank + 1) * PER_RANK)
        refs = slice(rank * PER_RANK * T, (rank + 1) * PER_RANK * T)
        out = head.forward_train(key[clips], ref[refs])
        out["loss_cab"].backward()
        grads = {name: p.grad.clone() for name, p in head.named_parameters()}
        torch.save(dict(loss=out["loss_cab"].detach(), grads=grads), f"{out_dir}/rank{rank}.pt")
    finally:
        dist.destroy_process_group()


def test_two_gloo_processes_match_one_process_with_the_global_batch(tmp_path):
    world_size = 2
    # fork: the children reuse this process's imports (spawning re-imports mmdet: ~20 s per child here);
    # each child sets one intra-op thread before any torch op, like DataLoader workers
    mp.start_processes(_worker, args=(world_size, str(tmp_path / "store"), str(tmp_path)), nprocs=world_size,
                       join=True, start_method="fork")
    ranks = [torch.load(tmp_path / f"rank{r}.pt") for r in range(world_size)]

    head = _fresh_head()
    key, ref = _global_batch()
    out = head.forward_train(key, ref)
    out["loss_cab"].backward()

    for name, param in head.named_parameters():
        ddp_average = sum(r["grads"][name] for r in ranks) / world_size      # what DDP's all-reduce does
        torch.testing.assert_close(ddp_average, param.grad, rtol=1e-4, atol=1e-7)
        # without the world-size factor the averaged gradient would be half as large
        assert not torch.allclose(ddp_average / world_size, param.grad, rtol=1e-2, atol=0.0)
    # the logged value is the global-batch NT-Xent (times the weight) on every rank
    for r in ranks:
        assert r["loss"].item() == pytest.approx(out["loss_cab"].item(), rel=1e-5)
