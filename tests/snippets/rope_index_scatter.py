import torch


class Model:
    def get_rope_index(self, input_ids, attention_mask):
        position_ids = torch.ones(3, *input_ids.shape, dtype=torch.long, device=input_ids.device)
        for i, ids in enumerate(input_ids):
            ids = ids[attention_mask[i].to(ids.device) == 1]
            positions = torch.arange(ids.shape[0]).view(1, -1).expand(3, -1)
            position_ids[..., i, attention_mask[i] == 1] = positions.to(position_ids.device)
        rope_deltas = position_ids.max() + 1 - input_ids.shape[1]
        return position_ids, rope_deltas
