"""ModelRunner + RaggedKVCache: ragged rows, rollback and batch changes give the same logits as a full forward."""

import torch

from tgi_csd.runner import ModelRunner
from tgi_csd.tokens import TokenSeq


def full_logits(model, tokens: list[int]) -> torch.Tensor:
    with torch.inference_mode():
        return model(torch.tensor([tokens])).logits[0]


def test_ragged_rows_match_full_forward(target):
    runner = ModelRunner(target, "t")
    runner.add_rows(2)
    a, b = [1, 5, 7, 9, 3, 4], [2, 8]
    out = runner.forward([0, 1], [TokenSeq(a), TokenSeq(b)], [1, 1])
    torch.testing.assert_close(out[0, -1], full_logits(target, a)[-1])
    torch.testing.assert_close(out[1, -1], full_logits(target, b)[-1])
    # Drafts of different lengths: right-aligned logits for the last len+1 positions.
    out = runner.forward([0, 1], [TokenSeq(a, [10, 11, 12]), TokenSeq(b, [13])], [4, 2])
    torch.testing.assert_close(out[0], full_logits(target, [*a, 10, 11, 12])[-4:])
    torch.testing.assert_close(out[1, -2:], full_logits(target, [*b, 13])[-2:])


def test_rollback_refeeds_only_the_changed_tail(target):
    runner = ModelRunner(target, "t")
    runner.add_rows(1)
    prompt = [1, 2, 3, 4, 5, 6]
    runner.forward([0], [TokenSeq(prompt, [7, 8, 9])], [4])
    assert runner.cache.lengths == [9]
    # Only 7 was accepted, then 20 chosen: the cache rolls back to prompt + [7] and feeds [20, 21].
    out = runner.forward([0], [TokenSeq([*prompt, 7], [20, 21])], [2])
    assert runner.cache.lengths == [9]
    assert runner.cached[0] == [*prompt, 7, 20, 21]
    torch.testing.assert_close(out[0], full_logits(target, [*prompt, 7, 20, 21])[-2:])


def test_commit_advances_synced_without_rescanning(target):
    runner = ModelRunner(target, "t")
    runner.add_rows(1)
    history = [1, 2, 3]
    runner.forward([0], [TokenSeq(history, [4, 5])], [3])
    history += [4, 9]
    runner.commit([history])
    assert runner.synced == [4]


def test_keep_and_add_rows_follow_the_batch(target):
    runner = ModelRunner(target, "t")
    runner.add_rows(3)
    seqs = [[1, 2, 3], [4, 5], [6, 7, 8, 9]]
    runner.forward([0, 1, 2], [TokenSeq(s) for s in seqs], [1, 1, 1])
    runner.keep_rows([2, 0])
    runner.add_rows(1)
    new = [10, 11]
    out = runner.forward([0, 1, 2], [TokenSeq(seqs[2], [12]), TokenSeq(seqs[0], [13]), TokenSeq(new)], [1, 1, 1])
    torch.testing.assert_close(out[0, -1], full_logits(target, [*seqs[2], 12])[-1])
    torch.testing.assert_close(out[1, -1], full_logits(target, [*seqs[0], 13])[-1])
    torch.testing.assert_close(out[2, -1], full_logits(target, new)[-1])


def test_subset_of_rows_and_capacity_growth(target):
    runner = ModelRunner(target, "t")
    runner.add_rows(2)
    long = list(range(1, 60)) * 5  # 295 tokens: past the initial capacity
    runner.forward([0, 1], [TokenSeq([1, 2]), TokenSeq([3, 4])], [1, 1])
    out = runner.forward([1], [TokenSeq([3, 4], long[:10])], [1])
    torch.testing.assert_close(out[0, -1], full_logits(target, [3, 4, *long[:10]])[-1])
    out = runner.forward([0], [TokenSeq(long)], [1])
    assert runner.cache.capacity > len(long)
    torch.testing.assert_close(out[0, -1], full_logits(target, long)[-1], rtol=1e-4, atol=1e-4)
