"""Tiny random models of every text family (and a tiny ViT), built locally in ~30 s.

Tokenizers are trained on lines of the Python standard library's source, the models get random
weights, and every model is exported through ``taskorch.inference.export.import_model`` (the
same path ``taskorch models import`` takes). Both the PyTorch directories (for agreement checks)
and the model repository are cached under the taskorch cache directory, keyed by
``TINY_VERSION``, behind a file lock so pytest-xdist workers build them once.
"""

from __future__ import annotations

import shutil
import sysconfig
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from taskorch.inference.defaults import cache_dir
from taskorch.inference.export import import_model, offline_environment, quiet_export
from taskorch.inference.locking import file_lock

TINY_VERSION = "3"
VOCAB = 1000


@dataclass(frozen=True)
class TinyModels:
    """Where the tiny models live."""

    torch_dir: Path  # one Hugging Face directory per model
    models_dir: Path  # the model repository built from them


# name -> (task for import_model, builder key)
TINY = {
    "tiny-gpt2": "text_generation",
    "tiny-bert-embed": "feature_extraction",
    "tiny-bert-mlm": "fill_mask",
    "tiny-bert-sentiment": "text_classification",
    "tiny-bert-nli": "zero_shot_classification",
    "tiny-bert-ner": "token_classification",
    "tiny-bert-qa": "question_answering",
    "tiny-t5": "text2text_generation",
    "tiny-vit": "image_classification",
}


def _corpus() -> list[str]:
    stdlib = Path(sysconfig.get_paths()["stdlib"])
    lines: list[str] = []
    for name in ("argparse.py", "textwrap.py", "difflib.py", "calendar.py", "string.py"):
        for line in (stdlib / name).read_text(encoding="utf-8").splitlines():
            text = line.strip().strip("#").strip()
            if len(text) > 8:
                lines.append(text)
    return lines[:8000]


def gpt2_tokenizer(work: Path, vocab_size: int = VOCAB) -> Any:
    """A GPT-2 style byte-level BPE tokenizer (``<|endoftext|>`` its only special token),
    trained offline on ``_corpus()``; its files are written to ``work``."""
    from tokenizers import ByteLevelBPETokenizer
    from transformers import GPT2TokenizerFast

    work.mkdir(parents=True, exist_ok=True)
    bpe = ByteLevelBPETokenizer()
    bpe.train_from_iterator(_corpus(), vocab_size=vocab_size, special_tokens=["<|endoftext|>"])
    bpe.save_model(str(work))
    return GPT2TokenizerFast(
        vocab_file=str(work / "vocab.json"),
        merges_file=str(work / "merges.txt"),
        unk_token="<|endoftext|>",
        bos_token="<|endoftext|>",
        eos_token="<|endoftext|>",
    )


def _build_torch(out: Path) -> None:
    import torch
    from tokenizers import (
        BertWordPieceTokenizer,
        SentencePieceUnigramTokenizer,
    )
    from tokenizers.processors import TemplateProcessing
    from transformers import (
        BertConfig,
        BertForMaskedLM,
        BertForQuestionAnswering,
        BertForSequenceClassification,
        BertForTokenClassification,
        BertModel,
        BertTokenizerFast,
        GPT2Config,
        GPT2LMHeadModel,
        PreTrainedTokenizerFast,
        T5Config,
        T5ForConditionalGeneration,
        ViTConfig,
        ViTForImageClassification,
        ViTImageProcessor,
    )

    torch.manual_seed(0)
    lines = _corpus()
    work = out / "_tokenizers"
    work.mkdir(parents=True, exist_ok=True)

    gpt_tok = gpt2_tokenizer(work)
    eos = gpt_tok.eos_token_id
    gpt = GPT2LMHeadModel(
        GPT2Config(
            vocab_size=len(gpt_tok),
            n_positions=256,
            n_embd=64,
            n_layer=2,
            n_head=2,
            bos_token_id=eos,
            eos_token_id=eos,
        )
    )
    gpt.save_pretrained(out / "tiny-gpt2")
    gpt_tok.save_pretrained(out / "tiny-gpt2")

    wordpiece = BertWordPieceTokenizer(lowercase=True)
    wordpiece.train_from_iterator(lines, vocab_size=VOCAB)
    wordpiece.save_model(str(work))
    bert_tok = BertTokenizerFast(vocab_file=str(work / "vocab.txt"))
    bert_config = {
        "vocab_size": len(bert_tok),
        "hidden_size": 64,
        "num_hidden_layers": 2,
        "num_attention_heads": 2,
        "intermediate_size": 128,
        "max_position_embeddings": 256,
    }
    bert_models = {
        "tiny-bert-embed": BertModel(BertConfig(**bert_config)),
        "tiny-bert-mlm": BertForMaskedLM(BertConfig(**bert_config)),
        "tiny-bert-sentiment": BertForSequenceClassification(
            BertConfig(**bert_config, id2label={0: "NEGATIVE", 1: "POSITIVE"})
        ),
        "tiny-bert-nli": BertForSequenceClassification(
            BertConfig(**bert_config, id2label={0: "contradiction", 1: "neutral", 2: "entailment"})
        ),
        "tiny-bert-ner": BertForTokenClassification(
            BertConfig(
                **bert_config,
                id2label={0: "O", 1: "B-PER", 2: "I-PER", 3: "B-LOC", 4: "I-LOC"},
            )
        ),
        "tiny-bert-qa": BertForQuestionAnswering(BertConfig(**bert_config)),
    }
    for name, model in bert_models.items():
        if hasattr(model.config, "label2id") and model.config.id2label:
            model.config.label2id = {v: k for k, v in model.config.id2label.items()}
        model.save_pretrained(out / name)
        bert_tok.save_pretrained(out / name)

    unigram = SentencePieceUnigramTokenizer()
    unigram.train_from_iterator(
        lines, vocab_size=VOCAB, special_tokens=["<pad>", "</s>", "<unk>"], unk_token="<unk>"
    )
    unigram.post_processor = TemplateProcessing(
        single="$A </s>", pair="$A </s> $B </s>", special_tokens=[("</s>", 1)]
    )
    t5_tok = PreTrainedTokenizerFast(
        tokenizer_object=unigram, pad_token="<pad>", eos_token="</s>", unk_token="<unk>"
    )
    t5_tok.model_input_names = ["input_ids", "attention_mask"]
    t5 = T5ForConditionalGeneration(
        T5Config(
            vocab_size=len(t5_tok),
            d_model=64,
            d_kv=16,
            d_ff=128,
            num_layers=2,
            num_decoder_layers=2,
            num_heads=4,
            pad_token_id=0,
            eos_token_id=1,
            decoder_start_token_id=0,
        )
    )
    t5.save_pretrained(out / "tiny-t5")
    t5_tok.save_pretrained(out / "tiny-t5")

    vit = ViTForImageClassification(
        ViTConfig(
            image_size=32,
            patch_size=8,
            hidden_size=64,
            num_hidden_layers=2,
            num_attention_heads=2,
            intermediate_size=128,
            id2label={0: "cat", 1: "dog", 2: "bird"},
            label2id={"cat": 0, "dog": 1, "bird": 2},
        )
    )
    vit.save_pretrained(out / "tiny-vit")
    ViTImageProcessor(size={"height": 32, "width": 32}).save_pretrained(out / "tiny-vit")
    shutil.rmtree(work)


def build_tiny_models(root: Path | None = None) -> TinyModels:
    """Build (once per ``TINY_VERSION``) and return the tiny models."""
    offline_environment()
    base = (root or cache_dir()) / f"tiny-models-v{TINY_VERSION}"
    done = base / ".complete"
    result = TinyModels(base / "torch", base / "models")
    if done.exists():
        return result
    with file_lock(base.parent / f"tiny-models-v{TINY_VERSION}.lock"):
        if done.exists():
            return result
        shutil.rmtree(base, ignore_errors=True)
        with quiet_export():
            _build_torch(result.torch_dir)
        for name, task in TINY.items():
            overrides = {"max_batch_size": 8, "max_queue_delay_ms": 2}
            if task == "text_generation":
                overrides.update(max_new_tokens=16)
            import_model(
                result.torch_dir / name,
                task,
                models_dir=result.models_dir,
                name=name,
                config_overrides=overrides,
                log=lambda _: None,
            )
        done.touch()
    return result
