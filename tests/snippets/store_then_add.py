class Decoder:
    def __init__(self):
        self.rope_deltas = None  # filled at prefill

    def positions(self, input_ids, cache_position=None):
        if cache_position is None or cache_position[0] == 0 or self.rope_deltas is None:
            rope_deltas = input_ids.sum(dim=-1, keepdim=True) * 0 + 2
            self.rope_deltas = rope_deltas
            return None
        delta = cache_position[0] + self.rope_deltas if cache_position is not None else 0
        return delta
