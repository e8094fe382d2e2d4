import torch


class Decoder:
    def __init__(self):
        self.rope_deltas = None  # filled at prefill

    def positions(self, input_ids, inputs_embeds, past_length=0):
        if past_length == 0 or self.rope_deltas is None:
            rope_deltas = input_ids.sum(dim=-1, keepdim=True) * 0 + 2
            self.rope_deltas = rope_deltas
            return None
        batch, length = inputs_embeds.shape[:2]
        position_ids = torch.arange(past_length, past_length + length).view(1, -1).expand(batch, -1)
        position_ids = position_ids.to(inputs_embeds.device)
        delta = self.rope_deltas.repeat_interleave(batch // self.rope_deltas.shape[0], dim=0)
        position_ids = (position_ids + delta).to(device=inputs_embeds.device)
        return position_ids
