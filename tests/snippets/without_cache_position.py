import torch


class Decoder:
    rope_deltas = None

    def positions(self, input_ids, past_length=0):
        if self.rope_deltas is None:
            rope_deltas = torch.zeros(input_ids.shape[0], 1, dtype=torch.long, device=input_ids.device)
            self.rope_deltas = rope_deltas
        text_positions = torch.arange(input_ids.shape[1], device=input_ids.device)
        return text_positions[None, ...] + self.rope_deltas
