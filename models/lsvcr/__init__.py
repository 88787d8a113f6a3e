"""LSVCR: an LLM-enhanced sequential recommender for joint video and comment recommendation.

Modules: `config` (dataclass configs), `sr_model` (the deployed SR model), `llm` (any local Hugging
Face LM, encoder or decoder; LoRA or top-layer tuning; preference vector), `text` (text embedding
tables), `prompts` (stage-1 samples and prompts), `losses`, `stage1` (alignment), `stage2`
(fine-tuning), `train` (`train_lsvcr`), `adapter` (`LSVCRRecommender`, the `Recommender`).
Submodules are imported explicitly so that importing `models.lsvcr` does not load transformers.
"""
