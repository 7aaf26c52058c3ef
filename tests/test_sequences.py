import pytest
import torch

from openrlhf_pilaf.utils.sequences import left_pad_with_action_mask


def test_left_pad_marks_exactly_the_response_tokens():
    ids, attn, action = left_pad_with_action_mask([[5, 6, 7, 8], [9, 10, 11, 12, 13, 14]], [2, 3], pad_token_id=0)
    assert ids.tolist() == [[0, 0, 5, 6, 7, 8], [9, 10, 11, 12, 13, 14]]
    assert attn.tolist() == [[0, 0, 1, 1, 1, 1], [1, 1, 1, 1, 1, 1]]
    # log-prob column t scores token t+1: row 0's response tokens 7, 8 sit at columns 4, 5 -> mask 3, 4
    assert action.tolist() == [[0, 0, 0, 1, 1], [0, 0, 1, 1, 1]]
    assert torch.equal(ids[:, 1:][action.bool()], torch.tensor([7, 8, 12, 13, 14]))


@pytest.mark.parametrize("seqs,lens", [([[1, 2]], [2]), ([[1, 2]], [0]), ([[1, 2]], [1, 1])])
def test_left_pad_refuses_inconsistent_input(seqs, lens):
    with pytest.raises(ValueError):
        left_pad_with_action_mask(seqs, lens, pad_token_id=0)
