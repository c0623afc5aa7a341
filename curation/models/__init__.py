from curation.models.datasets import Dataset, DatasetItem, DatasetVersion, FrozenVersionError
from curation.models.embeddings import EmbeddingShard, EmbeddingSpace, VectorIndex
from curation.models.images import BatchFile, Image, IngestBatch, Refusal, Source
from curation.models.jobs import Job, Schedule
from curation.models.prompts import Prompt, PromptSet, StyleDescriptor
from curation.models.recipes import Recipe, RecipeDecision, RecipeRun, RecipeScore
from curation.models.rounds import (
    Annotation,
    AnnotationRound,
    AnnotatorAccount,
    AnnotatorRoundStats,
    Judgement,
    LabelTask,
    WebhookEvent,
)

__all__ = [
    "Annotation",
    "AnnotationRound",
    "AnnotatorAccount",
    "AnnotatorRoundStats",
    "BatchFile",
    "Dataset",
    "DatasetItem",
    "DatasetVersion",
    "EmbeddingShard",
    "EmbeddingSpace",
    "FrozenVersionError",
    "Image",
    "IngestBatch",
    "Job",
    "Judgement",
    "LabelTask",
    "Prompt",
    "PromptSet",
    "Recipe",
    "RecipeDecision",
    "RecipeRun",
    "RecipeScore",
    "Refusal",
    "Schedule",
    "Source",
    "StyleDescriptor",
    "VectorIndex",
    "WebhookEvent",
]
