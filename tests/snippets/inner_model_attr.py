import torch


class Inner:
    rope_deltas = None


class Outer:
    def __init__(self):
        self.model = Inner()

    def prepare(self, input_ids, cache_position=None, past_key_values_length=0):
        if cache_position[0] == 0 or self.model.rope_deltas is None:
            rope_deltas = torch.full((input_ids.shape[0], 1), 3, device=input_ids.device)
            self.model.rope_deltas = rope_deltas
            return None
        offset = (past_key_values_length + self.model.rope_deltas).to(input_ids.device)
        delta = cache_position[0] + self.model.rope_deltas
        return delta, offset
