def prepare(input_ids, cache_position=None, **kwargs):
    rope_deltas = kwargs.get("rope_deltas", None)
    if cache_position is not None and cache_position[0] != 0:
        delta = cache_position[0] + rope_deltas if cache_position is not None and rope_deltas is not None else 0
        return delta
    return None
