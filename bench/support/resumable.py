"""RecBole's run state between working sessions: `models.run_state` (one safetensors file with the
model, the optimizer, every random stream and the trainer's counters), which our own trainers use too."""

from models.run_state import FORMAT, load_state, save_state

__all__ = ["FORMAT", "load_state", "save_state"]
