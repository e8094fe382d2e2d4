import torch


class Decoder:
    rope_deltas = None

    def positions(self, input_ids, attention_mask, past_length=0, cache_position=None):
        if past_length == 0 or self.rope_deltas is None:
            rope_deltas = attention_mask.sum(dim=-1, keepdim=True) - input_ids.shape[1]
            self.rope_deltas = rope_deltas
            return None
        delta = (past_length + self.rope_deltas).to(input_ids.device)
        position_ids = torch.arange(input_ids.shape[1], device=input_ids.device)
        return position_ids.view(1, -1).add(delta)
