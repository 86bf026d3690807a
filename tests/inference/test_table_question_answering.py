"""table_question_answering with an optimum-exported tiny random TAPEX (BART with TAPEX's own
tokenizer): `models import` exports and validates it, a real server answers over gRPC and REST
(Envoy), and the prompt ids and greedy answer agree with TAPEX's tokenizer and the PyTorch
model's ``generate``."""

from __future__ import annotations

import shutil
import sysconfig
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from taskorch.inference.defaults import cache_dir
from taskorch.inference.export import import_model, offline_environment, quiet_export
from taskorch.inference.locking import file_lock
from tests import databases
from tests.gateway._http import wait_for_status
from tests.servers import ServerProcess

pytestmark = pytest.mark.xdist_group("table-qa-server")

VERSION = 4
NAME = "tiny-tapex"
POSITIONS = 160  # small, so a long table must drop rows
NEW_TOKENS = 8

TABLE = {
    "City": ["Paris", "Berlin", "Madrid"],
    "Country": ["France", "Germany", "Spain"],
    "Population": [2161000, 3645000, 3223000],
    "Motto": [
        "Fluctuat nec mergitur, tossed by the waves but never sunk in the river Seine",
        "",
        "Plus Ultra",
    ],
}
QUERY = "Which City has the largest Population?"


def _build(torch_dir: Path) -> None:
    import torch
    from tokenizers import ByteLevelBPETokenizer
    from transformers import BartConfig, BartForConditionalGeneration, TapexTokenizer

    torch.manual_seed(0)
    stdlib = Path(sysconfig.get_paths()["stdlib"])
    lines = [
        line.strip()
        for name in ("argparse.py", "textwrap.py", "calendar.py")
        for line in (stdlib / name).read_text(encoding="utf-8").splitlines()
        if len(line.strip()) > 8
    ]
    work = torch_dir.parent / "_bpe"
    work.mkdir(parents=True, exist_ok=True)
    bpe = ByteLevelBPETokenizer()
    bpe.train_from_iterator(
        [*lines, "col : row 1 : | which has the largest"],
        vocab_size=800,
        special_tokens=["<s>", "<pad>", "</s>", "<unk>", "<mask>"],
    )
    bpe.save_model(str(work))
    tokenizer = TapexTokenizer(
        vocab_file=str(work / "vocab.json"), merges_file=str(work / "merges.txt")
    )
    config = BartConfig(
        vocab_size=len(tokenizer),
        d_model=32,
        encoder_layers=1,
        decoder_layers=1,
        encoder_attention_heads=2,
        decoder_attention_heads=2,
        encoder_ffn_dim=64,
        decoder_ffn_dim=64,
        max_position_embeddings=POSITIONS,
        forced_bos_token_id=0,
        init_std=0.3,  # large random weights, so the table and question change the answer
    )
    model = BartForConditionalGeneration(config).eval()
    # A random model's favourite tokens are often special ones or stray bytes, which decode to
    # nothing or to half a character: keep it to tokens of printable ASCII ("Ġ" is a space) so
    # the answers compared are text.
    for token, index in tokenizer.get_vocab().items():
        if index < 5 or not all(c == "Ġ" or " " < c <= "~" for c in token):
            model.final_logits_bias[0, index] = -100.0
    model.save_pretrained(torch_dir)
    tokenizer.save_pretrained(torch_dir)
    shutil.rmtree(work)


@pytest.fixture(scope="module")
def tiny_tapex() -> tuple[Path, Path]:
    """(the PyTorch folder, a repository holding its ONNX import), built once and cached."""
    offline_environment()
    base = cache_dir() / f"tiny-tapex-v{VERSION}"
    base.mkdir(parents=True, exist_ok=True)
    with file_lock(base / ".lock"):
        if not (base / "models" / NAME / "model.yaml").exists():
            shutil.rmtree(base / "torch", ignore_errors=True)
            with quiet_export():
                _build(base / "torch" / NAME)
            import_model(
                base / "torch" / NAME,
                "table_question_answering",
                models_dir=base / "models",
                config_overrides={"max_new_tokens": NEW_TOKENS},
                log=lambda _: None,
            )
    return base / "torch" / NAME, base / "models"


@pytest.fixture(scope="module")
def table_server(
    tmp_path_factory: pytest.TempPathFactory, tiny_tapex: tuple[Path, Path]
) -> Iterator[ServerProcess]:
    workdir = tmp_path_factory.mktemp("table-qa")
    url = databases.new_database(workdir)
    server = ServerProcess(
        workdir=workdir, database_url=url, gateway=True, models_dir=tiny_tapex[1]
    )
    server.start()
    yield server
    server.stop()
    databases.discard(url)


def _tapex_ids(torch_dir: Path, table: dict[str, list[Any]], query: str) -> list[int]:
    """TAPEX's own tokenizer steps: cells cut, table written out, lower case, special tokens
    (what ``TapexTokenizer(table=DataFrame, query=...)`` does, without pandas)."""
    from transformers import TapexTokenizer

    with quiet_export():
        tokenizer = TapexTokenizer.from_pretrained(torch_dir)
    content = {"header": list(table), "rows": [list(r) for r in zip(*table.values(), strict=True)]}
    tokenizer.truncate_table_cells(content, query, None)
    text = f"{query} {tokenizer.table_linearize.process_table(content)}".lower()
    ids: list[int] = tokenizer.prepare_for_model(
        ids=tokenizer.convert_tokens_to_ids(tokenizer.tokenize(text)), add_special_tokens=True
    )["input_ids"]
    return ids


def _pytorch_answer(
    torch_dir: Path, table: dict[str, list[Any]], query: str
) -> tuple[int, str, int]:
    """The prompt's length, the PyTorch model's greedy answer and its length in tokens."""
    import torch
    from transformers import BartForConditionalGeneration, TapexTokenizer

    with quiet_export():
        tokenizer = TapexTokenizer.from_pretrained(torch_dir)
        model = BartForConditionalGeneration.from_pretrained(torch_dir).eval()
    ids = _tapex_ids(torch_dir, table, query)
    with torch.no_grad():
        out = model.generate(
            torch.tensor([ids]),
            max_new_tokens=NEW_TOKENS + 1,  # the forced BOS counts as new for transformers
            forced_eos_token_id=None,  # else the last one is forced to be EOS
            do_sample=False,
            num_beams=1,
        )[0].tolist()
    assert out[:2] == [model.config.decoder_start_token_id, 0]  # start, then the forced BOS
    answer = tokenizer.decode(out[2:], skip_special_tokens=True)
    return len(ids), answer.strip(), len([t for t in out[2:] if t != model.config.eos_token_id])


def _rest_answer(server: ServerProcess, body: dict[str, Any]) -> dict[str, Any]:
    with httpx.Client(base_url=server.http_url, timeout=60) as rest:
        created = rest.post("/tasks", json=body)
        assert created.status_code == 201, created.text
        done = wait_for_status(rest, created.json()["task_id"], {"COMPLETED"}, timeout=120)
    result: dict[str, Any] = done["result"]
    return result


def test_table_answers_over_grpc_and_rest_agree_with_pytorch(
    table_server: ServerProcess, tiny_tapex: tuple[Path, Path]
) -> None:
    reference = _pytorch_answer(tiny_tapex[0], TABLE, QUERY)
    by_name = _pytorch_answer(tiny_tapex[0], {k: TABLE[k] for k in sorted(TABLE)}, QUERY)
    assert reference[1] and by_name[1]  # text, not only special tokens
    with table_server.client() as client:
        task = client.create_task(  # columns: the order the keys lose on the way
            task_type="table_question_answering",
            model_name=NAME,
            input_data={"table": TABLE, "columns": list(TABLE), "query": QUERY},
            parameters={"do_sample": False},
        )
        done = client.wait_for_task(task.task_id, timeout=120)
    assert done.status == "COMPLETED", done.error
    assert done.result is not None
    lists = [list(TABLE), *(list(r) for r in zip(*TABLE.values(), strict=True))]
    over_rest = _rest_answer(
        table_server,  # Hugging Face's shape, the table as lists (header first), default model
        {
            "task_type": "table-question-answering",
            "input_data": {"inputs": {"table": lists, "query": QUERY}},
            "parameters": {"do_sample": False},
        },
    )
    rows = [dict(zip(TABLE, r, strict=True)) for r in zip(*TABLE.values(), strict=True)]
    sorted_columns = _rest_answer(  # rows as objects, no column order: by name
        table_server,
        {
            "task_type": "table_qa",
            "model_name": NAME,
            "input_data": {"table": rows, "query": QUERY},
            "parameters": {"do_sample": False},
        },
    )
    for via, result, (prompt_tokens, expected, generated) in (
        ("gRPC", done.result, reference),
        ("REST", over_rest, reference),
        ("REST, columns by name", sorted_columns, by_name),
    ):
        print(
            f"table_question_answering over {via}: {result['answer']!r}, PyTorch {expected!r}, "
            f"prompt {result['prompt_tokens']} tokens (TAPEX's tokenizer: {prompt_tokens})"
        )
        assert result["prompt_tokens"] == prompt_tokens
        assert result["answer"] == expected
        assert result["rows_used"] == 3
        assert result["tokens_generated"] == generated
    assert reference[1] != by_name[1]  # the model reads its input: column order matters


def test_a_table_too_long_keeps_its_first_rows(
    table_server: ServerProcess, tiny_tapex: tuple[Path, Path]
) -> None:
    table = {"n": [str(i) for i in range(60)], "square": [str(i * i) for i in range(60)]}
    result = _rest_answer(
        table_server,
        {
            "task_type": "table_question_answering",
            "model_name": NAME,
            "input_data": {"table": table, "query": "What is the square of 7?"},
            "parameters": {"do_sample": False},
        },
    )
    kept = result["rows_used"]
    assert 0 < kept < 60 and result["prompt_tokens"] <= POSITIONS
    head = {k: v[:kept] for k, v in table.items()}
    prompt_tokens, expected, generated = _pytorch_answer(
        tiny_tapex[0], head, "What is the square of 7?"
    )
    assert (result["prompt_tokens"], result["answer"]) == (prompt_tokens, expected)
    assert result["tokens_generated"] == generated
    assert (
        result["answer"]
        != _rest_answer(  # the model reads its input
            table_server,
            {
                "task_type": "table_question_answering",
                "model_name": NAME,
                "input_data": {"table": TABLE, "query": QUERY},
                "parameters": {"do_sample": False},
            },
        )["answer"]
    )
    one_more = {k: v[: kept + 1] for k, v in table.items()}
    assert len(_tapex_ids(tiny_tapex[0], one_more, "What is the square of 7?")) > POSITIONS


def test_bad_tables_are_refused_naming_the_field(table_server: ServerProcess) -> None:
    with httpx.Client(base_url=table_server.http_url, timeout=60) as rest:
        for input_data, field in (
            ({"query": "q"}, "input_data.table"),
            ({"table": {"a": [1, 2], "b": [1]}, "query": "q"}, "input_data.table"),
            ({"table": "a,b", "query": "q"}, "input_data.table"),
            ({"table": {"a": ["1"]}}, "input_data.query"),
            ({"table": {"a": ["1"]}, "columns": ["b"], "query": "q"}, "input_data.columns"),
            ({"inputs": {"table": {"a": [{"x": 1}]}, "query": "q"}}, "input_data.inputs.table"),
        ):
            refused = rest.post(
                "/tasks",
                json={"task_type": "table_question_answering", "input_data": input_data},
            )
            assert refused.status_code == 400, refused.text
            assert field in refused.text, refused.text
