"""Sizes the server and its SDK agree on, in one place so that they cannot drift.

Whatever the server accepts it must be able to send back: a task is read back whole (GetTask,
WatchTask) with its input and its result in one message, so the input and the result limits
add up to less than the message limit, leaving room for everything else. Lists leave large
payloads out unless asked (see ``LIST_PAYLOAD_BYTES``). Imports nothing: the SDK, remote
workers and the server all read it.
"""

from __future__ import annotations

MiB = 1024 * 1024

# The largest gRPC message either side sends or receives (the SDK's channels use it too;
# gRPC's own default receive limit is 4 MiB).
MAX_MESSAGE_BYTES = 16 * MiB
# A task's input_data and parameters together (protobuf-encoded, about their JSON size); also
# a subtask's input.
MAX_INPUT_BYTES = 4 * MiB
# A result a worker reports.
MAX_RESULT_BYTES = 8 * MiB
# In a list (view BASIC), an input_data, parameters or result larger than this is left out
# and named in the task's omitted_fields.
LIST_PAYLOAD_BYTES = 64 * 1024
# In a list with view FULL, a page stops early when its tasks would pass this.
LIST_FULL_PAGE_BYTES = 12 * MiB
# The text of a text-analysis task (seed 003), in characters.
MAX_TEXT_LENGTH = 4000
