class Decoder:
    rope_deltas = None

    def positions(self, input_ids, cache_position=None):
        if cache_position is None or self.rope_deltas is None:
            rope_deltas = input_ids.sum(dim=-1, keepdim=True) * 0 + 2
            # the widely quoted fix: crashes when cache_position is None (plain forward, training)
            self.rope_deltas = rope_deltas.to(cache_position.device)
            return None
        return cache_position[0] + self.rope_deltas


class GuardedDecoder:
    rope_deltas = None

    def positions(self, input_ids, cache_position=None):
        rope_deltas = input_ids.sum(dim=-1, keepdim=True) * 0 + 2
        if cache_position is not None:
            self.rope_deltas = rope_deltas.to(cache_position.device)
