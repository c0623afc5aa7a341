from curation.models.datasets import Dataset, DatasetItem, DatasetVersion, FrozenVersionError
from curation.models.embeddings import EmbeddingShard, EmbeddingSpace, VectorIndex
from curation.models.images import BatchFile, Image, IngestBatch, Refusal, Source
from curation.models.jobs import Job, Schedule
from curation.models.prompts import Prompt, PromptSet, StyleDescriptor
from curation.models.recipes import Recipe, RecipeDecision, RecipeRun, RecipeScore
from curation.models.rounds import (
    Annotation,
    AnnotationRound,
    AnnotationVersion,
    AnnotatorAccount,
    AnnotatorRoundStats,
    GoldItem,
    Judgement,
    LabelTask,
    RoundNotice,
    WebhookEvent,
)

__all__ = [
    "Annotation",
    "AnnotationRound",
    "AnnotationVersion",
    "AnnotatorAccount",
    "AnnotatorRoundStats",
    "BatchFile",
    "Dataset",
    "DatasetItem",
    "DatasetVersion",
    "EmbeddingShard",
    "EmbeddingSpace",
    "FrozenVersionError",
    "GoldItem",
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
    "RoundNotice",
    "Schedule",
    "Source",
    "StyleDescriptor",
    "VectorIndex",
    "WebhookEvent",
]
