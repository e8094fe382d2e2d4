import torch


def prepare(input_ids, cache_position=None, **kwargs):
    rope_deltas = kwargs.get("rope_deltas", None)
    if cache_position is None or cache_position[0] == 0:
        return None
    batch, length = input_ids.shape
    delta = cache_position[0] + rope_deltas if cache_position is not None and rope_deltas is not None else 0
    position_ids = torch.arange(length, device=input_ids.device).view(1, -1).expand(batch, -1)
    # the deltas arrive with the generation arguments, wherever the last forward left them
    position_ids = position_ids + delta
    return position_ids
