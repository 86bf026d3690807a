"""Renders the Envoy configuration of the gateway (``envoy.yaml`` is its default rendering).

One listener serves REST (HTTP/1.1 or h2c, transcoded to gRPC) and native gRPC (passed
through) on the same port. The filter chain, in order:

1. ``lua`` (its code in ``response_filter.lua``, package data) gives seed 001's ``POST
   /tasks`` its 201, seed 002's ``DELETE /api/v1/tasks/{id}`` its 204, ``/health`` a 503
   when unhealthy, seeds 001 and 002 their lower-case status
   words (``pending``; seed 002 ``queued``), ``X-RateLimit-Reset`` as a Unix time, 422 for
   input too long, and error bodies the keys each seed document promises: ``error`` (a
   string on /v1, an object with the error code on seed 001's /tasks), ``detail`` (seed
   002's /api/v1), ``request_id`` everywhere, added to the google.rpc.Status JSON (``code``,
   ``message``, ``details``); on /openai/ it is replaced by OpenAI's ``{"error": {"message",
   "type", "param", "code"}}``. It runs on responses only, reading the rule and the surface
   from the metadata of the REST route the path matched; it comes first so that it sees, on
   the way out, what every other filter wrote (the rate limiters' headers and replies);
2. ``header_mutation`` strips ``grpc-*`` headers from REST responses (switched off on the gRPC
   passthrough route, where they are the protocol);
   ``cors`` (with ``--cors-origins`` only): the policy of the virtual host, so of every REST
   and WebSocket route; a preflight from an allowed origin is answered here (the Lua filter
   makes its 200 a 204), one from another origin goes on and gets no ``Access-Control-*``;
3. two ``local_ratelimit`` filters per client address: a sustained rate (X-RateLimit-* headers)
   and a burst limit, each refilled continuously; gRPC clients get RESOURCE_EXHAUSTED;
4. ``grpc_json_transcoder`` with snake_case names, enums as names, every scalar printed,
   server streams as Server-Sent Events, unknown paths and query parameters refused, and the
   route kept as matched on the REST path;
5. ``router``.

With a web endpoint (``GatewaySettings.web``), ``/``, ``/docs`` and ``/ui/*`` (not rate
limited) and the WebSocket upgrades under ``/ws/`` go to the server's aiohttp endpoint
(``server/web.py``) over HTTP/1.1, past the REST-only filters.

Local replies to REST clients (the transcoder's own 400/404, 429, 503, and 431 for a URL and
headers over 32 KiB) get the JSON body of their surface, each key once (OpenAI's error shape
on /openai/).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

import yaml

from taskorch.config import split_addr

GRPC_HEALTH_SERVICE = "taskorch.v1.TaskService"

# The Lua filter's code (``response_filter.lua``, shipped with the package): its rate windows
# placeholder ``{--RATE_WINDOWS--}`` is filled in by render().
_LUA = (
    resources.files("taskorch.gateway").joinpath("response_filter.lua").read_text(encoding="utf-8")
)


@dataclass(frozen=True)
class RateLimit:
    """Token buckets per client address: ``(tokens, seconds)`` pairs, smoothly refilled."""

    sustained: tuple[int, float] = (100, 60.0)
    burst: tuple[int, float] | None = (20, 10.0)

    @classmethod
    def parse(cls, text: str) -> RateLimit | None:
        """``"100/60s,20/10s"`` (sustained, then optional burst); ``"off"`` → None.

        Raises:
            ValueError: not of that form.
        """
        text = text.strip().lower()
        if text in ("off", "none", "0", ""):
            return None
        buckets = []
        for part in text.split(","):
            tokens, _, period = part.strip().partition("/")
            period = period.strip()
            seconds = {"s": 1.0, "sec": 1.0, "min": 60.0, "m": 60.0, "h": 3600.0}.get(period)
            if seconds is None:
                number = period.rstrip("smh")
                unit = period[len(number) :] or "s"
                seconds = float(number) * {"s": 1.0, "m": 60.0, "h": 3600.0}[unit]
            if not tokens.isdigit() or int(tokens) < 1 or seconds <= 0:
                raise ValueError(f"rate limit {part!r} is not TOKENS/PERIOD like 100/60s")
            buckets.append((int(tokens), seconds))
        if len(buckets) > 2:
            raise ValueError("give at most two buckets: SUSTAINED[,BURST]")
        return cls(buckets[0], buckets[1] if len(buckets) == 2 else None)

    def describe(self) -> str:
        buckets = [self.sustained] + ([self.burst] if self.burst is not None else [])
        return ",".join(f"{n}/{s:g}s" for n, s in buckets)


@dataclass(frozen=True)
class GatewaySettings:
    listen: str
    upstreams: Sequence[str]
    descriptor: Path
    admin: str = "127.0.0.1:9901"
    rate_limit: RateLimit | None = field(default_factory=RateLimit)
    services: Sequence[str] = ()
    access_log: bool = False
    # The server's web endpoint (dashboard, /docs, WebSockets): HTTP/1.1 on this address.
    web: str | None = None
    # Origins whose pages may call the REST API and WebSockets (CORS); "*" allows any.
    cors_origins: Sequence[str] = ()


def _disabled(*filters: str) -> dict[str, Any]:
    return {
        name: {"@type": "type.googleapis.com/envoy.config.route.v3.FilterConfig", "disabled": True}
        for name in filters
    }


_UPSTREAM = {"cluster": "taskorch_grpc", "timeout": "0s", "idle_timeout": "3600s"}
_WEB_UPSTREAM = {"cluster": "taskorch_web", "timeout": "30s"}
# Headers a browser may send and read cross-origin (CORS).
CORS_ALLOW_METHODS = "GET, POST, PUT, PATCH, DELETE, OPTIONS"
CORS_ALLOW_HEADERS = (
    "content-type, x-api-key, authorization, idempotency-key, x-request-id, last-event-id"
)
CORS_EXPOSE_HEADERS = (
    "x-request-id, x-ratelimit-limit, x-ratelimit-remaining, x-ratelimit-reset, "
    "x-ratelimit-scope, retry-after"
)


def _rest_route(
    match: dict[str, Any], *, rule: str = "", surface: str = "canonical"
) -> dict[str, Any]:
    """A REST route to the server. Its metadata tells the Lua filter, on the response, the
    status ``rule`` (created, no_content, health) and the seed document whose error body the
    path promises; the request id is copied onto the upstream response for it (answers that
    gRPC itself refused, a message over its size limit say, carry none from the server)."""
    return {
        "match": match,
        "route": _UPSTREAM,
        "metadata": {
            "filter_metadata": {"envoy.filters.http.lua": {"rule": rule, "surface": surface}}
        },
        "response_headers_to_add": [
            {
                "header": {"key": "x-request-id", "value": "%REQ(X-REQUEST-ID)%"},
                "append_action": "ADD_IF_ABSENT",
            }
        ],
    }


def _method_is(method: str) -> list[dict[str, Any]]:
    return [{"name": ":method", "string_match": {"exact": method}}]


def _rest_routes() -> list[dict[str, Any]]:
    """The REST routes, most specific first; all go to the transcoder and the same upstream.

    The routes only tell the Lua filter which rule and surface apply (the transcoder keeps
    the route matched on the REST path: ``match_incoming_request_route``); which RPC a path
    calls is the transcoder's business (the proto's http bindings).
    """
    return [
        _rest_route({"path": "/v1/health"}, rule="health"),
        # Seed 001: a created task answers 201.
        _rest_route(
            {"safe_regex": {"regex": "/tasks/?"}, "headers": _method_is("POST")},
            rule="created",
            surface="seed001",
        ),
        # Seed 002: a cancelled task answers 204 (over HTTP/1.1).
        _rest_route(
            {"safe_regex": {"regex": "/api/v1/tasks/[^/]+/?"}, "headers": _method_is("DELETE")},
            rule="no_content",
            surface="seed002",
        ),
        _rest_route({"prefix": "/api/v1/"}, surface="seed002"),
        # OpenAI's API (OpenAIService): errors in OpenAI's shape.
        _rest_route({"prefix": "/openai/"}, surface="openai"),
        _rest_route({"prefix": "/tasks"}, surface="seed001"),
        _rest_route({"prefix": "/"}),
    ]


def _web_routes(limiters: Sequence[str]) -> list[dict[str, Any]]:
    """The routes to the server's web endpoint: the dashboard and its assets, /docs (none of
    them rate limited: a page load fetches several files), and the WebSockets under /ws/
    (upgraded; rate limited like REST calls)."""
    rest_only = _disabled(
        "envoy.filters.http.lua",
        "envoy.filters.http.header_mutation",
        "envoy.filters.http.grpc_json_transcoder",
    )
    # GET and HEAD only: anything else on these paths is a REST call to no method, answered
    # by the transcoder's JSON 404 like every unknown path.
    reads = [{"name": ":method", "string_match": {"safe_regex": {"regex": "GET|HEAD"}}}]
    pages = [
        {"path": "/", "headers": reads},
        {"path": "/docs", "headers": reads},
        {"prefix": "/ui/", "headers": reads},
    ]
    return [
        *(
            {
                "match": match,
                "route": _WEB_UPSTREAM,
                "typed_per_filter_config": {**rest_only, **_disabled(*limiters)},
            }
            for match in pages
        ),
        {
            "match": {"prefix": "/ws/", "headers": _method_is("GET")},
            "route": {
                "cluster": "taskorch_web",
                "timeout": "0s",
                "idle_timeout": "3600s",
                "upgrade_configs": [{"upgrade_type": "websocket", "enabled": True}],
            },
            "typed_per_filter_config": rest_only,
        },
    ]


def _cors_policy(origins: Sequence[str]) -> dict[str, Any]:
    """The CORS policy of every route (a preflight's answer; headers on actual answers)."""
    matchers = [
        {"safe_regex": {"regex": ".*"}} if origin == "*" else {"exact": origin}
        for origin in origins
    ]
    return {
        "envoy.filters.http.cors": {
            "@type": "type.googleapis.com/envoy.extensions.filters.http.cors.v3.CorsPolicy",
            "allow_origin_string_match": matchers,
            "allow_methods": CORS_ALLOW_METHODS,
            "allow_headers": CORS_ALLOW_HEADERS,
            "expose_headers": CORS_EXPOSE_HEADERS,
            "max_age": "600",
        }
    }


def parse_origins(text: str) -> tuple[str, ...]:
    """``--cors-origins``: a comma-separated list of origins (``scheme://host[:port]``) or
    ``*``; empty allows none.

    Raises:
        ValueError: an entry that is not an origin.
    """
    origins = []
    for part in text.split(","):
        origin = part.strip().rstrip("/")
        if not origin:
            continue
        scheme, sep, rest = origin.partition("://")
        if origin != "*" and (
            scheme not in ("http", "https") or not sep or not rest or "/" in rest
        ):
            raise ValueError(f"{part.strip()!r} is not an origin like https://app.example.com")
        origins.append(origin)
    return tuple(dict.fromkeys(origins))


def _address(addr: str) -> dict[str, Any]:
    host, port = split_addr(addr)
    return {"socket_address": {"address": host, "port_value": port}}


def _endpoint(addr: str) -> dict[str, Any]:
    return {"endpoint": {"address": _address(addr)}}


def _rate_filter(name: str, bucket: tuple[int, float], headers: bool) -> dict[str, Any]:
    tokens, seconds = bucket
    retry_after = max(1, math.ceil(seconds / tokens))  # the bucket refills smoothly
    refused = [("retry-after", str(retry_after))]
    if not headers:  # the other bucket's filter writes X-RateLimit-* on every answer
        refused += [
            ("x-ratelimit-limit", str(tokens)),
            ("x-ratelimit-remaining", "0"),
            ("x-ratelimit-reset", str(retry_after)),
        ]
    limited_headers = [
        {"append_action": "OVERWRITE_IF_EXISTS_OR_ADD", "header": {"key": key, "value": value}}
        for key, value in refused
    ]
    return {
        "name": name,
        "typed_config": {
            "@type": "type.googleapis.com/envoy.extensions.filters.http.local_ratelimit.v3"
            ".LocalRateLimit",
            "stat_prefix": name.rsplit(".", 1)[-1],
            # The default bucket is never the binding one: every request has a client address.
            "token_bucket": {
                "max_tokens": 1_000_000,
                "tokens_per_fill": 1_000_000,
                "fill_interval": "1s",
            },
            "filter_enabled": {"default_value": {"numerator": 100, "denominator": "HUNDRED"}},
            "filter_enforced": {"default_value": {"numerator": 100, "denominator": "HUNDRED"}},
            "rate_limited_as_resource_exhausted": True,
            "max_dynamic_descriptors": 10_000,
            "rate_limits": [{"actions": [{"remote_address": {}}]}],
            "descriptors": [
                {
                    "entries": [{"key": "remote_address"}],
                    "token_bucket": {
                        "max_tokens": tokens,
                        "tokens_per_fill": tokens,
                        "fill_interval": f"{seconds:g}s",
                    },
                }
            ],
            "response_headers_to_add": limited_headers,
            **({"enable_x_ratelimit_headers": "DRAFT_VERSION_03"} if headers else {}),
        },
    }


# Local replies go to REST clients as JSON; gRPC clients keep their grpc-status replies.
# A REST request has no "te: trailers" until the transcoder adds it together with
# x-envoy-original-path.
_REST_REQUEST = {
    "or_filter": {
        "filters": [
            {
                "header_filter": {
                    "header": {
                        "name": "te",
                        "string_match": {"exact": "trailers"},
                        "invert_match": True,
                        "treat_missing_header_as_empty": True,
                    }
                }
            },
            {"header_filter": {"header": {"name": "x-envoy-original-path", "present_match": True}}},
        ]
    }
}


def _status_is(code: int) -> dict[str, Any]:
    return {
        "status_code_filter": {
            "comparison": {"op": "EQ", "value": {"default_value": code, "runtime_key": "rl_code"}}
        }
    }


def _path_starts(prefix: str) -> dict[str, Any]:
    """A local reply's filter: the REST path starts with ``prefix`` (the transcoder moves the
    path it matched to x-envoy-original-path)."""
    return {
        "or_filter": {
            "filters": [
                {"header_filter": {"header": {"name": name, "string_match": {"prefix": prefix}}}}
                for name in (":path", "x-envoy-original-path")
            ]
        }
    }


# The surfaces' paths; a local reply takes the error keys of the surface its path belongs to.
_SEED_001_PATH = _path_starts("/tasks")
_SEED_002_PATH = _path_starts("/api/v1/")

# Envoy's own answers (local replies) by status: the error code each surface shows. Anything
# else is INTERNAL_ERROR.
_LOCAL_REASONS = {
    400: "VALIDATION_ERROR",
    404: "NOT_FOUND",
    405: "NOT_FOUND",
    413: "VALIDATION_ERROR",
    429: "RATE_LIMITED",
    431: "VALIDATION_ERROR",
    502: "SERVICE_UNAVAILABLE",
    503: "SERVICE_UNAVAILABLE",
    504: "TIMEOUT",
}
# Envoy refuses a request whose URL and headers exceed this with 431 before reading it (so
# in the canonical error shape, with no request id). The gRPC server accepts four times as
# much metadata (server/app.py), so whatever Envoy forwards, with the headers it adds (a copy
# of the path among them), reaches the server, which refuses a URL or a header over 16 KiB
# with 400 in the surface's error shape.
MAX_REQUEST_HEADERS_KB = 32
_TOO_LARGE = (
    f"the request's URL and headers are larger than {MAX_REQUEST_HEADERS_KB} KiB: "
    "send long values in the body"
)


def _local_body(surface: str, reason: str, message: str) -> dict[str, Any]:
    """One surface's error body for an answer of Envoy's own: every key once (the Lua filter
    leaves bodies that start with an HTTP status as their code alone)."""
    body: dict[str, Any] = {
        "code": "%RESPONSE_CODE%",
        "message": message,
        "request_id": "%REQ(X-REQUEST-ID)%",
    }
    if surface == "seed001":
        body["error"] = {
            "code": reason,
            "message": message,
            "details": {"field": "", "reason": message},
        }
        body["timestamp"] = "%START_TIME(%Y-%m-%dT%H:%M:%SZ)%"
    elif surface == "seed002":
        body["detail"] = message
    else:
        body["error"] = message
        body["reason"] = reason
    return body


_OPENAI_PATH = _path_starts("/openai/")


def _openai_local_replies(rate_limited: str) -> list[dict[str, Any]]:
    """Envoy's own replies on /openai/ (rate limited, no such path, server down) in OpenAI's
    error shape."""
    kinds = [
        (429, "rate_limit_error", "rate_limit_exceeded", rate_limited),
        (503, "server_error", "service_unavailable", "%LOCAL_REPLY_BODY%"),
        (None, "invalid_request_error", "%RESPONSE_CODE%", "%LOCAL_REPLY_BODY%"),
    ]
    return [
        {
            "filter": {
                "and_filter": {
                    "filters": [_REST_REQUEST, _OPENAI_PATH, *([_status_is(code)] if code else [])]
                }
            },
            "body_format_override": {
                "json_format": {
                    "error": {"message": message, "type": kind, "param": None, "code": reason}
                }
            },
        }
        for code, kind, reason, message in kinds
    ]


def _local_reply_mappers(limit: RateLimit | None) -> list[dict[str, Any]]:
    """A mapper per surface and status of Envoy's own answers to REST clients."""
    rate_message = ""
    if limit is not None:
        rule = limit.describe().replace(",", " and ").replace("/", " requests per ")
        rate_message = (
            f"rate limit exceeded: at most {rule} per client; retry after Retry-After seconds"
        )
    # /openai/ first: the canonical surface's mappers match any path.
    mappers = _openai_local_replies(rate_message or "rate limit exceeded")
    surfaces: list[tuple[str, list[dict[str, Any]]]] = [
        ("seed001", [_SEED_001_PATH]),
        ("seed002", [_SEED_002_PATH]),
        ("canonical", []),
    ]
    for surface, path in surfaces:
        for status, reason in _LOCAL_REASONS.items():
            message = "%LOCAL_REPLY_BODY%"
            if status == 429 and rate_message:
                message = rate_message
            elif status == 431:
                message = _TOO_LARGE
            mappers.append(
                {
                    "filter": {
                        "and_filter": {"filters": [_REST_REQUEST, _status_is(status), *path]}
                    },
                    "body_format_override": {"json_format": _local_body(surface, reason, message)},
                }
            )
        fallback = _local_body(surface, "INTERNAL_ERROR", "%LOCAL_REPLY_BODY%")
        mappers.append(
            {
                "filter": {"and_filter": {"filters": [_REST_REQUEST, *path]}}
                if path
                else _REST_REQUEST,
                "body_format_override": {"json_format": fallback},
            }
        )
    return mappers


def render(settings: GatewaySettings) -> dict[str, Any]:
    """Envoy's bootstrap configuration as a dict (see :func:`render_yaml`)."""
    limiters = ["envoy.filters.http.local_ratelimit.sustained"]
    windows = ""
    if settings.rate_limit is not None:
        buckets = [settings.rate_limit.sustained, settings.rate_limit.burst]
        windows = ", ".join(
            f'["{tokens}"] = {seconds:g}' for tokens, seconds in reversed([b for b in buckets if b])
        )
    http_filters: list[dict[str, Any]] = [
        # First, so that it sees (on the way out) what the other filters wrote, the rate
        # limiters' headers and replies among them.
        {
            "name": "envoy.filters.http.lua",
            "typed_config": {
                "@type": "type.googleapis.com/envoy.extensions.filters.http.lua.v3.Lua",
                "default_source_code": {
                    "inline_string": _LUA.replace("{--RATE_WINDOWS--}", "{" + windows + "}")
                },
            },
        },
        {
            "name": "envoy.filters.http.header_mutation",
            "typed_config": {
                "@type": "type.googleapis.com/envoy.extensions.filters.http.header_mutation.v3"
                ".HeaderMutation",
                "mutations": {
                    "response_mutations": [
                        {"remove": "grpc-status"},
                        {"remove": "grpc-message"},
                        {"remove": "grpc-accept-encoding"},
                    ]
                },
            },
        },
    ]
    if settings.cors_origins:
        # Before the rate limiters: their refusals carry the CORS headers too (a browser
        # shows a page nothing of an answer without them).
        http_filters.append(
            {
                "name": "envoy.filters.http.cors",
                "typed_config": {
                    "@type": "type.googleapis.com/envoy.extensions.filters.http.cors.v3.Cors"
                },
            }
        )
    if settings.rate_limit is not None:
        # X-RateLimit-* headers on every answer come from the bucket that binds first (the
        # burst one when there is one); a refused request says which limit refused it.
        burst = settings.rate_limit.burst
        http_filters.append(
            _rate_filter(limiters[0], settings.rate_limit.sustained, headers=burst is None)
        )
        if burst is not None:
            limiters.append("envoy.filters.http.local_ratelimit.burst")
            http_filters.append(_rate_filter(limiters[1], burst, headers=True))
    else:
        limiters = []
    http_filters += [
        {
            "name": "envoy.filters.http.grpc_json_transcoder",
            "typed_config": {
                "@type": "type.googleapis.com/envoy.extensions.filters.http.grpc_json_transcoder"
                ".v3.GrpcJsonTranscoder",
                "proto_descriptor": str(settings.descriptor),
                "services": list(settings.services),
                "print_options": {
                    "add_whitespace": False,
                    "always_print_primitive_fields": True,
                    "always_print_enums_as_ints": False,
                    "preserve_proto_field_names": True,
                    "stream_sse_style_delimited": True,
                },
                "convert_grpc_status": True,
                "request_validation_options": {
                    "reject_unknown_method": True,
                    "reject_unknown_query_parameters": True,
                    "reject_binding_body_field_collisions": True,
                },
                "case_insensitive_enum_parsing": True,
                # The route stays the one the REST path matched: it tells the Lua filter
                # which rule and error surface apply.
                "match_incoming_request_route": True,
                "query_param_unescape_plus": True,
                "max_request_body_size": 8 * 1024 * 1024,
                "max_response_body_size": 32 * 1024 * 1024,
            },
        },
        {
            "name": "envoy.filters.http.router",
            "typed_config": {
                "@type": "type.googleapis.com/envoy.extensions.filters.http.router.v3.Router"
            },
        },
    ]
    rest_only = ["envoy.filters.http.lua", "envoy.filters.http.grpc_json_transcoder"]
    routes: list[dict[str, Any]] = [
        {
            # Load balancers probe /health: never rate limited.
            **_rest_route({"path": "/health"}, rule="health"),
            "typed_per_filter_config": _disabled(*limiters),
        },
        {
            # Scrapers neither (SystemService.GetMetrics, transcoded: the server checks that
            # the caller is an admin, as for any call; the metrics port itself never
            # reaches Envoy).
            **_rest_route({"path": "/metrics"}),
            "typed_per_filter_config": _disabled(*limiters),
        },
        {
            "match": {"prefix": "/", "grpc": {}},
            "route": _UPSTREAM,
            "typed_per_filter_config": _disabled("envoy.filters.http.header_mutation", *rest_only),
        },
        *(_web_routes(limiters) if settings.web else []),
        *_rest_routes(),
    ]
    virtual_host: dict[str, Any] = {"name": "taskorch", "domains": ["*"], "routes": routes}
    if settings.cors_origins:
        virtual_host["typed_per_filter_config"] = _cors_policy(settings.cors_origins)
    hcm: dict[str, Any] = {
        "@type": "type.googleapis.com/envoy.extensions.filters.network.http_connection_manager"
        ".v3.HttpConnectionManager",
        "stat_prefix": "taskorch",
        "codec_type": "AUTO",
        # Envoy is the edge: the client address is the peer's, so a forged
        # X-Forwarded-For gets no fresh rate-limit bucket.
        "use_remote_address": True,
        "preserve_external_request_id": True,
        "always_set_request_id_in_response": True,
        "http_protocol_options": {"enable_trailers": True},
        "stream_idle_timeout": "3600s",
        "route_config": {
            "name": "taskorch",
            "virtual_hosts": [virtual_host],
        },
        "local_reply_config": {"mappers": _local_reply_mappers(settings.rate_limit)},
        "max_request_headers_kb": MAX_REQUEST_HEADERS_KB,
        "http_filters": http_filters,
    }
    if settings.web:
        # WebSockets only where a route enables them (/ws/).
        hcm["upgrade_configs"] = [{"upgrade_type": "websocket", "enabled": False}]
    if settings.access_log:
        hcm["access_log"] = [
            {
                "name": "envoy.access_loggers.stdout",
                "typed_config": {
                    "@type": "type.googleapis.com/envoy.extensions.access_loggers.stream.v3"
                    ".StdoutAccessLog"
                },
            }
        ]
    clusters: list[dict[str, Any]] = [
        {
            "name": "taskorch_grpc",
            "type": "STATIC",
            "connect_timeout": "2s",
            "lb_policy": "ROUND_ROBIN",
            "typed_extension_protocol_options": {
                "envoy.extensions.upstreams.http.v3.HttpProtocolOptions": {
                    "@type": "type.googleapis.com/envoy.extensions.upstreams.http.v3"
                    ".HttpProtocolOptions",
                    "explicit_http_config": {"http2_protocol_options": {}},
                }
            },
            "circuit_breakers": {
                "thresholds": [
                    {
                        "max_connections": 10_000,
                        "max_pending_requests": 10_000,
                        "max_requests": 100_000,
                        "max_retries": 10,
                    }
                ]
            },
            "health_checks": [
                {
                    "timeout": "1s",
                    "interval": "2s",
                    "no_traffic_interval": "2s",
                    "unhealthy_threshold": 2,
                    "healthy_threshold": 1,
                    "grpc_health_check": {"service_name": GRPC_HEALTH_SERVICE},
                }
            ],
            "load_assignment": {
                "cluster_name": "taskorch_grpc",
                "endpoints": [
                    {
                        "lb_endpoints": [
                            {"endpoint": {"address": _address(a)}} for a in settings.upstreams
                        ]
                    }
                ],
            },
        }
    ]
    if settings.web:
        clusters.append(
            {
                "name": "taskorch_web",
                "type": "STATIC",
                "connect_timeout": "2s",
                "load_assignment": {
                    "cluster_name": "taskorch_web",
                    "endpoints": [{"lb_endpoints": [_endpoint(settings.web)]}],
                },
            }
        )
    return {
        "admin": {"address": _address(settings.admin)},
        "static_resources": {
            "listeners": [
                {
                    "name": "taskorch",
                    "address": _address(settings.listen),
                    "filter_chains": [
                        {
                            "filters": [
                                {
                                    "name": "envoy.filters.network.http_connection_manager",
                                    "typed_config": hcm,
                                }
                            ]
                        }
                    ],
                }
            ],
            "clusters": clusters,
        },
    }


def render_yaml(settings: GatewaySettings) -> str:
    header = (
        "# Envoy configuration of the taskorch REST gateway, rendered by "
        "`taskorch gateway render`.\n"
        "# taskorch serve renders its own copy with the addresses of its flags.\n"
    )
    return header + yaml.safe_dump(render(settings), sort_keys=False, width=100)
