"""What seed examples that need a feature of a later issue answer TODAY, in one table.

The gateway tests send these examples exactly as the seed documents show them and assert the
row's status and error code. When a feature lands, flip its rows: put the success status the
seed promises (``Expected(201)``) and the tests check the success shape instead of the error.
A row is never a 5xx: a missing feature answers a clear JSON error.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Expected:
    status: int
    # The error code (google.rpc.ErrorInfo.reason, or the gateway's own reason) while failing.
    reason: str | None = None
    # The issue whose feature turns this row into a success.
    until: str = ""

    @property
    def ok(self) -> bool:
        return self.status < 400


TODAY: dict[str, Expected] = {
    # Seed 001: text_generation with a model this server does not have (the test servers have
    # no model repository): refused before queueing, naming what is available.
    "seed001.create_text_generation": Expected(404, "MODEL_NOT_FOUND"),
    # Seed 002: its template example names a model this server does not have (llama3.1:8b):
    # refused before queueing, naming what is available; validation says `model` is invalid.
    "seed002.create_from_template": Expected(404, "MODEL_NOT_FOUND"),
    "seed002.list_templates": Expected(200),
    "seed002.get_template": Expected(200),
    "seed002.validate_template": Expected(200),
    # The gateway test servers run open (loopback, no API key exists): X-API-Key is not
    # checked. tests/security covers servers with keys, where a missing key is 401.
    "seed002.missing_api_key": Expected(200),
    # Seed 000's subtask routes with ids of a task that does not exist (the working flow is in
    # test_seed_000_subtasks.py): a subtask needs a kind; unknown ids are 404.
    "seed000.create_subtask": Expected(400, "VALIDATION_ERROR"),
    "seed000.list_subtasks": Expected(404, "TASK_NOT_FOUND"),
    "seed000.take_subtask": Expected(404, "TASK_NOT_FOUND"),
    "seed000.get_subtask": Expected(404, "SUBTASK_NOT_FOUND"),
    "seed000.put_subtask": Expected(404, "SUBTASK_NOT_FOUND"),
    "seed000.put_subtask_status": Expected(404, "SUBTASK_NOT_FOUND"),
    # Seed 000's chat routes on a server without models (the working flow, with a real model,
    # is in tests/inference/test_chat_gateway.py): a session needs a text-generation model;
    # the ids of these examples name no session.
    "seed000.create_chat": Expected(404, "MODEL_NOT_FOUND"),
    "seed000.list_chats": Expected(200),
    "seed000.get_chat": Expected(404, "SESSION_NOT_FOUND"),
    "seed000.delete_chat": Expected(404, "SESSION_NOT_FOUND"),
    "seed000.post_message": Expected(404, "SESSION_NOT_FOUND"),
    "seed000.get_message": Expected(404, "SESSION_NOT_FOUND"),
    "seed000.delete_message": Expected(404, "SESSION_NOT_FOUND"),
}

# Where today's answer differs from a seed document's own example by a design decision or a
# known gap (see the report of the gateway tests); flip when it is decided otherwise.
DIVERGES: dict[str, Expected] = {
    # Seed 003 answers `GET /v1/tasks/xyz` with 404 {"error": "Task with ID 'xyz' not found"};
    # so does taskorch: an id that cannot exist is not found.
    "seed003.get_malformed_id": Expected(404, "TASK_NOT_FOUND"),
}
