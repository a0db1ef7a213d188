"""Data-parallel training (torch.distributed, gloo on CPU): two processes train as one, only rank 0 writes,
and a run continues with another number of processes.

Tolerances, and why:

* Without random draws (no augmentation, dropout made the identity) two processes compute what one does,
  up to the order of floating-point sums (two half-batch gradients averaged instead of one batch's): the
  epoch losses agree to 1e-5 relative and the weights after two epochs to 1e-3 (measured: 2e-7 and 5e-5;
  Adam divides by the root of tiny second moments, which lets rounding grow).
* With the defaults each process draws its own augmentations and dropout masks (rank 0 those of one
  process), so the curves agree only as two augmentation streams would: 6% on the first epoch's loss
  (measured: 2.7%; a loss over half the negatives would be about 20% lower), the validation score within 0.1.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from dataclasses import asdict

import pytest
import torch
from distributed_helpers import Stop, gather_gradients, spawn, stop_after, toy_batch, toy_model, train, without_dropout
from fixtures import train_config

from dermretr.train import GlobalBatches, fit
from dermretr.train._distributed import Cluster, check_batch, join, main_only, split_sizes

TIGHT = 1e-5


def _spawned(tmp_path, name: str, config, world: int = 2, no_dropout: bool = False,
             stop: int | None = None) -> list[dict]:
    report = str(tmp_path / name)
    spawn(train, world, asdict(config), report, no_dropout, stop)
    return [json.loads(open(f"{report}.rank{r}.json").read()) for r in range(world)]


def _one_process(config, no_dropout: bool = False, stop: int | None = None):
    import torch.nn.modules.dropout as dropout_module

    before = dropout_module.F
    if no_dropout:
        without_dropout()
    try:
        return fit(config, None if stop is None else stop_after(stop))
    except Stop:
        return None
    finally:
        dropout_module.F = before


def _losses(history: list[dict]) -> list[float]:
    return [h["loss"] for h in history]


def _max_weight_difference(a: dict, b: dict) -> float:
    return max(float((a[k].float() - b[k].float()).abs().max()) for k in a)


def test_two_processes_train_as_one_and_only_rank_0_writes(synth_root, tmp_path):
    config = train_config(f"synthetic:{synth_root}", tmp_path / "two", augment=False, patient_weight=0.3,
                          word_region_weight=0.3)  # every gathered feature: global, local, masks, words, patches
    ranks = _spawned(tmp_path, "two", config, no_dropout=True)
    one = _one_process(train_config(f"synthetic:{synth_root}", tmp_path / "one", augment=False, patient_weight=0.3,
                                    word_region_weight=0.3), no_dropout=True)

    assert ranks[0]["history"] == ranks[1]["history"]  # every process returns rank 0's records
    two = ranks[0]["history"]
    assert [h["processes"] for h in two] == [2, 2] and all("processes" not in h for h in one.history)
    assert _losses(two) == pytest.approx(_losses(one.history), rel=TIGHT)
    for key in ("combined", "global", "local", "modification", "patient", "word_region"):
        assert [h[key] for h in two] == pytest.approx([h[key] for h in one.history], rel=1e-4), key
    weights = torch.load(tmp_path / "two.rank0.pt"), torch.load(tmp_path / "two.rank1.pt")
    assert _max_weight_difference(*weights) == 0.0  # DDP keeps the processes' weights identical
    one_weights = {k: v.float() for k, v in one.retriever.state_dict().items()}
    assert _max_weight_difference(weights[0], one_weights) < 1e-3

    assert ranks[1]["writes"] == []  # rank 1 neither locked, marked, wrote nor removed anything of the run
    assert any("last.pt" in w for w in ranks[0]["writes"])  # (the spy does see rank 0's writes)
    assert sorted(p.name for p in (tmp_path / "two").iterdir()) == sorted(p.name for p in (tmp_path / "one").iterdir())
    assert [json.loads(line)["epoch"] for line in (tmp_path / "two" / "metrics.jsonl").read_text().splitlines()] \
        == [1, 2]


def test_a_run_continues_with_another_number_of_processes(synth_root, tmp_path):
    data = f"synthetic:{synth_root}"
    straight = _one_process(train_config(data, tmp_path / "straight", augment=False), no_dropout=True).history
    # two processes, interrupted after the first epoch, then one
    _spawned(tmp_path, "first", train_config(data, tmp_path / "a", augment=False), no_dropout=True, stop=1)
    resumed = _one_process(train_config(data, tmp_path / "a", augment=False, resume=True), no_dropout=True).history
    assert [h.get("processes", 1) for h in resumed] == [2, 1]
    assert _losses(resumed) == pytest.approx(_losses(straight), rel=TIGHT)
    # one process, then two (the optimiser's state travels from rank 0 to rank 1)
    assert _one_process(train_config(data, tmp_path / "b", augment=False), no_dropout=True, stop=1) is None
    ranks = _spawned(tmp_path, "second", train_config(data, tmp_path / "b", augment=False, resume=True),
                     no_dropout=True)
    assert [h.get("processes", 1) for h in ranks[1]["history"]] == [1, 2]
    assert _losses(ranks[1]["history"]) == pytest.approx(_losses(straight), rel=TIGHT)
    assert ranks[1]["writes"] == []


def test_torchrun_runs_the_command_line_and_its_defaults_agree_with_one_process_like_seeds(synth_root, tmp_path):
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    env.pop("DERMRETR_DEBUG", None)
    base = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2", "-m",
            "dermretr", "train", "--data", f"synthetic:{synth_root}", "--epochs", "1", "--batch-size", "16",
            "--image-size", "64", "--n-masks", "2", "--device", "cpu", "--no-progress"]
    done = subprocess.run([*base, "--out", str(tmp_path / "run")], env=env, capture_output=True, text=True,
                          timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.count("best epoch 1:") == 1  # rank 0 speaks, rank 1 does not
    record = json.loads((tmp_path / "run" / "metrics.jsonl").read_text())
    assert record["processes"] == 2 and record["epoch"] == 1
    # with the defaults (augmentation, dropout), each process draws its own: not one process's numbers, but as close
    # as another seed's (stated, not hidden); the same settings as the command's in one process
    one = fit(train_config(f"synthetic:{synth_root}", tmp_path / "one", epochs=1)).history[0]
    assert record["loss"] != one["loss"] and record["loss"] == pytest.approx(one["loss"], rel=0.06)
    assert record["map@10"] == pytest.approx(one["map@10"], abs=0.1)
    # a user's folder is refused by rank 0 (one line); rank 1 stops without a second one
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "thesis.docx").write_text("years of work")
    refused = subprocess.run([*base, "--out", str(tmp_path / "mine")], env=env, capture_output=True, text=True,
                             timeout=600)
    assert refused.returncode != 0
    said = [line for line in refused.stderr.splitlines() if line.startswith("dermretr:")]
    assert len(said) == 1 and "thesis.docx" in said[0], refused.stderr[-3000:]
    assert sorted(p.name for p in (tmp_path / "mine").iterdir()) == ["thesis.docx"]


@pytest.mark.parametrize("sizes", [[4, 3], [2, 2, 3]])
def test_gathered_features_give_the_one_process_gradient_exactly(tmp_path, sizes):
    """In float64, so that the equality is not blurred by rounding: features, loss and gradients."""
    report = str(tmp_path / "toy")
    spawn(gather_gradients, len(sizes), sizes, report)
    x, labels = toy_batch(sum(sizes))
    model = toy_model(sizes)
    loss = model(x, labels)
    loss.backward()
    for rank in range(len(sizes)):
        got = json.loads(open(f"{report}.rank{rank}.json").read())
        assert got["loss"] == pytest.approx(float(loss.detach()), rel=1e-12)
        for name, p in model.named_parameters():
            assert p.grad is not None and float(p.grad.abs().max()) > 1e-3  # a gradient worth comparing
            torch.testing.assert_close(torch.tensor(got["grads"][name], dtype=torch.float64), p.grad, rtol=1e-10,
                                       atol=1e-12, msg=name)


def test_global_batches_are_one_process_batches_cut_into_slices():
    gen = torch.Generator().manual_seed(3)
    weights = torch.tensor([1.0, 1.0, 4.0, 0.5, 2.0, 1.0, 1.0, 3.0, 1.0, 1.0], dtype=torch.double)
    one = GlobalBatches(torch.utils.data.WeightedRandomSampler(weights, 10, generator=gen), batch_size=4)
    expected = list(torch.utils.data.BatchSampler(
        torch.utils.data.WeightedRandomSampler(weights, 10, generator=torch.Generator().manual_seed(3)), 4, True))
    assert list(one) == expected == one.batches()
    slices = []
    for rank in range(3):
        sampler = torch.utils.data.WeightedRandomSampler(weights, 10, generator=torch.Generator().manual_seed(3))
        part = GlobalBatches(sampler, batch_size=4, world=3, rank=rank)
        assert part.batches() == expected and len(part) == 2
        slices.append(list(part))
    assert [sum((s[b] for s in slices), []) for b in range(2)] == expected  # the slices make up each batch
    assert [len(s[0]) for s in slices] == split_sizes(4, 3) == [2, 1, 1]


def test_one_process_needs_nothing_and_says_what_is_wrong(monkeypatch):
    for name in ("WORLD_SIZE", "RANK", "LOCAL_RANK"):
        monkeypatch.delenv(name, raising=False)
    cluster, device = join("cpu", 8)
    assert cluster == Cluster() and device.type == "cpu" and not torch.distributed.is_initialized()
    assert main_only(cluster, lambda a: a + 1, 1) == 2
    with pytest.raises(ValueError, match="boom"):
        main_only(cluster, lambda: (_ for _ in ()).throw(ValueError("boom")))
    with pytest.raises(Exception, match=r"batch size 3 is split over 2 processes: use --batch-size 4 or more"):
        check_batch(3, 2)
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setenv("RANK", "0")
    monkeypatch.delenv("MASTER_ADDR", raising=False)
    monkeypatch.delenv("MASTER_PORT", raising=False)
    with pytest.raises(Exception, match="MASTER_ADDR and MASTER_PORT not set: start the processes with torchrun"):
        join("cpu", 8)
    monkeypatch.setenv("RANK", "2")
    with pytest.raises(Exception, match="WORLD_SIZE=2, RANK=2, LOCAL_RANK=0 do not describe a process"):
        join("cpu", 8)
    monkeypatch.setenv("RANK", "one")
    with pytest.raises(Exception, match="RANK='one' is not an integer"):
        join("cpu", 8)
    monkeypatch.setenv("RANK", "1")
    with pytest.raises(Exception, match="batch size 2 is split over 2 processes"):
        join("cpu", 2)
