"""Task pipelines: one per task type, Hugging Face Inference API shapes in and out."""

from __future__ import annotations

from taskorch.inference.pipelines.audio_classification import AudioClassification
from taskorch.inference.pipelines.base import Pipeline
from taskorch.inference.pipelines.classification import TextClassification, ZeroShotClassification
from taskorch.inference.pipelines.embeddings import FeatureExtraction, SentenceSimilarity
from taskorch.inference.pipelines.fill_mask import FillMask
from taskorch.inference.pipelines.image_classification import ImageClassification
from taskorch.inference.pipelines.image_generation import ImageGeneration
from taskorch.inference.pipelines.image_segmentation import ImageSegmentation
from taskorch.inference.pipelines.object_detection import ObjectDetection
from taskorch.inference.pipelines.ocr import ImageToText
from taskorch.inference.pipelines.question_answering import QuestionAnswering
from taskorch.inference.pipelines.seq2seq import Seq2Seq
from taskorch.inference.pipelines.speech_recognition import SpeechRecognition
from taskorch.inference.pipelines.table_question_answering import TableQuestionAnswering
from taskorch.inference.pipelines.text_generation import TextGeneration
from taskorch.inference.pipelines.text_to_speech import TextToSpeech
from taskorch.inference.pipelines.token_classification import TokenClassification
from taskorch.inference.task_types import TaskType

PIPELINES: dict[TaskType, Pipeline] = {
    TaskType.TEXT_GENERATION: TextGeneration(),
    TaskType.TEXT2TEXT_GENERATION: Seq2Seq(TaskType.TEXT2TEXT_GENERATION),
    TaskType.SUMMARIZATION: Seq2Seq(TaskType.SUMMARIZATION),
    TaskType.TRANSLATION: Seq2Seq(TaskType.TRANSLATION),
    TaskType.TEXT_CLASSIFICATION: TextClassification(),
    TaskType.ZERO_SHOT_CLASSIFICATION: ZeroShotClassification(),
    TaskType.TOKEN_CLASSIFICATION: TokenClassification(),
    TaskType.QUESTION_ANSWERING: QuestionAnswering(),
    TaskType.FILL_MASK: FillMask(),
    TaskType.FEATURE_EXTRACTION: FeatureExtraction(),
    TaskType.SENTENCE_SIMILARITY: SentenceSimilarity(),
    TaskType.IMAGE_CLASSIFICATION: ImageClassification(),
    TaskType.TEXT_TO_SPEECH: TextToSpeech(),
    TaskType.IMAGE_TO_TEXT: ImageToText(),
    TaskType.AUDIO_CLASSIFICATION: AudioClassification(),
    TaskType.OBJECT_DETECTION: ObjectDetection(),
    TaskType.IMAGE_SEGMENTATION: ImageSegmentation(),
    TaskType.TABLE_QUESTION_ANSWERING: TableQuestionAnswering(),
    TaskType.AUTOMATIC_SPEECH_RECOGNITION: SpeechRecognition(),
    TaskType.IMAGE_GENERATION: ImageGeneration(),
}

__all__ = ["PIPELINES", "Pipeline"]
