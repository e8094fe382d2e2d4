import torch


class Base:
    def _prepare_position_ids_for_generation(self, inputs_tensor, model_kwargs):
        return torch.arange(inputs_tensor.shape[1], device=inputs_tensor.device).expand(inputs_tensor.shape[0], -1)


class Inner:
    rope_deltas = None


class Generator(Base):
    def __init__(self):
        self.model = Inner()

    def _prepare_position_ids_for_generation(self, inputs_tensor, model_kwargs):
        text_positions = super()._prepare_position_ids_for_generation(inputs_tensor, model_kwargs)
        if model_kwargs.get("past_length", 0) and self.model.rope_deltas is not None:
            return text_positions[None, ...] + self.model.rope_deltas
        self.model.rope_deltas = torch.zeros(inputs_tensor.shape[0], 1, dtype=torch.long, device=inputs_tensor.device)
        return text_positions[None, ...].expand(3, -1, -1)
