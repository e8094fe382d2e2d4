import torch


class Decoder:
    rope_deltas = None

    def positions(self, input_ids, inputs_embeds, cache_position=None):
        if self.rope_deltas is None:
            self.rope_deltas = torch.ones(input_ids.shape[0], 1, dtype=torch.long, device=input_ids.device)
            rope_deltas = self.rope_deltas
            self.rope_deltas = rope_deltas
            return None
        else:
            delta = (
                (cache_position[0] + self.rope_deltas).to(inputs_embeds.device)
                if cache_position is not None
                else 0
            )
            return delta
