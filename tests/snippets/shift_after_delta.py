import torch


class Decoder:
    def __init__(self):
        self.rope_deltas = None  # filled at prefill

    def positions(self, input_ids, inputs_embeds, cache_position=None):
        if cache_position is None or cache_position[0] == 0 or self.rope_deltas is None:
            rope_deltas = input_ids.sum(dim=-1, keepdim=True) * 0 + 2
            self.rope_deltas = rope_deltas
            return None
        batch, length = inputs_embeds.shape[:2]
        delta = cache_position[0] + self.rope_deltas if cache_position is not None else 0
        position_ids = torch.arange(length, device=inputs_embeds.device).view(1, -1).expand(batch, -1)
        if cache_position is not None:  # an int otherwise
            delta = delta.repeat_interleave(batch // delta.shape[0], dim=0)
        position_ids = position_ids.add(delta)
        return position_ids
