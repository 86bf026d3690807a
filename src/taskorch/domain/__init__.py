"""The kernel: the vocabulary every other package of taskorch shares, importing none of them.

=================  ==========================================================================
``values``         tasks, subtasks, their :class:`Status`, task events, leases, pages, ``JSON``
                   and the task defaults (tenant, priority, attempts)
``leases``         what a worker and the task engine exchange: :class:`WorkerIdentity`,
                   :class:`HeartbeatAnswer`, :class:`StopNotice`, ``DEFAULT_LEASE_SECONDS``
``chat_values``    chat sessions, messages, generations, sources and chat events
``artifacts``      a task's binary results (:class:`Artifact`) and how a result carries them
``errors``         the one error hierarchy (mapped to gRPC codes in server/errors.py)
``caller``         who is calling: tenant and roles (:class:`Caller`)
``limits``         the sizes the server, the SDK and remote workers agree on
=================  ==========================================================================

Every package may import ``taskorch.domain``; it imports nothing else of taskorch, and no
gRPC, SQL or model runtime (tests/test_layering.py checks both), so the SDK and a remote
worker can use it without loading the server.
"""
