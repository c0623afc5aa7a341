from training.models.checkpoints import Checkpoint
from training.models.generations import Generation, GenerationBatch
from training.models.runs import TrainingRun

__all__ = ["Checkpoint", "Generation", "GenerationBatch", "TrainingRun"]
