from training.models.checkpoints import Checkpoint
from training.models.generations import Generation, GenerationBatch
from training.models.loops import RetrainRound, RoundStep
from training.models.runs import TrainingRun
from training.models.sweeps import TradeoffSweep

__all__ = [
    "Checkpoint",
    "Generation",
    "GenerationBatch",
    "RetrainRound",
    "RoundStep",
    "TradeoffSweep",
    "TrainingRun",
]
