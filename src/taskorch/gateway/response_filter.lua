
-- What the gRPC-JSON transcoder cannot express: HTTP statuses other than 200 for OK, and
-- the error bodies the seed documents promise (added to the google.rpc.Status JSON). Which
-- rule and which seed document's surface apply come from the route's metadata (see
-- _rest_routes), so nothing runs on the request path: entering Lua there cost ~0.13 ms of
-- Envoy CPU per request on the reference machine, about 8% of REST throughput under load.

-- The JSON string literal (quotes and escapes kept) that follows "key":
local function string_after(body, key)
  local first = string.find(body, '"' .. key .. '":"', 1, true)
  if not first then
    return nil
  end
  local i = first + #key + 4
  local j = i
  while j <= #body do
    local c = string.sub(body, j, j)
    if c == "\\" then
      j = j + 2
    elseif c == '"' then
      return '"' .. string.sub(body, i, j - 1) .. '"'
    else
      j = j + 1
    end
  end
  return nil
end

local FALLBACK_REASON = {
  ["400"] = "VALIDATION_ERROR", ["401"] = "UNAUTHENTICATED", ["403"] = "PERMISSION_DENIED",
  ["404"] = "NOT_FOUND", ["409"] = "CONFLICT", ["413"] = "VALIDATION_ERROR",
  ["422"] = "VALIDATION_ERROR",
  ["429"] = "RATE_LIMITED", ["503"] = "SERVICE_UNAVAILABLE", ["504"] = "TIMEOUT",
}

-- gRPC INVALID_ARGUMENT reasons that REST answers 422 Unprocessable Entity.
local UNPROCESSABLE = {TEXT_TOO_LONG = true, MESSAGE_TOO_LONG = true}

local OPENAI_TYPE = {
  ["400"] = "invalid_request_error", ["404"] = "invalid_request_error",
  ["409"] = "invalid_request_error", ["413"] = "invalid_request_error",
  ["422"] = "invalid_request_error",
  ["401"] = "authentication_error", ["403"] = "permission_error",
  ["429"] = "rate_limit_error",
}
local OPENAI_CODE = {
  UNAUTHENTICATED = "invalid_api_key", RATE_LIMITED = "rate_limit_exceeded",
  QUOTA_EXCEEDED = "insufficient_quota",
}

local function seed_error_body(response_handle, status, surface)
  local headers = response_handle:headers()
  local kind = headers:get("content-type") or ""
  if not string.find(kind, "json", 1, true) then
    return
  end
  -- Objects from before the wait for the body (headers, metadata) do not survive it: what
  -- is needed of them is read now.
  local request_id = headers:get("x-request-id") or ""
  local body = response_handle:body()
  local text = body:getBytes(0, body:length())
  if string.sub(text, 1, 1) ~= "{" or string.find(text, '"request_id":"', 1, true) == 2 then
    return
  end
  -- Envoy's own answers are shaped whole by local_reply_config (keys sorted: "code", an HTTP
  -- status, comes first); only the server's google.rpc.Status (a gRPC code) is shaped here.
  local code = tonumber(string.match(text, '^{"code":(%d+)') or "0")
  if code >= 100 or string.sub(text, 1, 10) == '{"error":{' then
    -- (On /openai/ they are in OpenAI's shape already.)
    return
  end
  if status == "429" and string.find(text, "larger than max", 1, true)
      and not string.find(text, '"reason":"', 1, true) then
    -- gRPC refused a message over its size limit (RESOURCE_EXHAUSTED, no details): the
    -- request is too large, not rate limited (our limiter's 429s never pass through here).
    status = "413"
    response_handle:headers():replace(":status", status)
  end
  local message = string_after(text, "message") or '"error"'
  local reason = string.match(text, '"reason":"([%w_]+)"') or FALLBACK_REASON[status]
    or "INTERNAL_ERROR"
  if status == "400" and UNPROCESSABLE[reason] and surface ~= "openai" then
    -- Well-formed but refused for its content (seed 003: "text too long or semantically
    -- invalid"; seeds 001 and 002: "validation error"): 422. (OpenAI answers 400.)
    status = "422"
    response_handle:headers():replace(":status", status)
  end
  -- The server's answers carry the request id (Envoy's) as a header; Envoy's own replies
  -- have no such header yet but carry it in the body already (local_reply_config).
  local prefix = "{"
  if request_id ~= "" then
    prefix = '{"request_id":"' .. request_id .. '",'
  end
  if surface == "openai" then
    -- OpenAI's error body, as its clients parse it (their exception class comes from the
    -- status): {"error": {"message", "type", "param", "code"}}.
    local shaped = '{"error":{"message":' .. message .. ',"type":"'
      .. (OPENAI_TYPE[status] or "server_error") .. '","param":'
      .. (string_after(text, "field") or "null") .. ',"code":"'
      .. (OPENAI_CODE[reason] or string.lower(reason)) .. '"}}'
    body:setBytes(shaped)
    response_handle:headers():replace("content-length", tostring(#shaped))
    return
  end
  if surface == "seed002" then
    prefix = prefix .. '"detail":' .. message .. ","
  elseif surface == "seed001" then
    local field = string_after(text, "field") or '""'
    prefix = prefix .. '"error":{"code":"' .. reason .. '","message":' .. message
      .. ',"details":{"field":' .. field .. ',"reason":' .. message .. '}},'
      .. '"timestamp":"' .. os.date("!%Y-%m-%dT%H:%M:%SZ") .. '",'
  else
    prefix = prefix .. '"error":' .. message .. ',"reason":"' .. reason .. '",'
  end
  local shaped = prefix .. string.sub(text, 2)
  body:setBytes(shaped)
  response_handle:headers():replace("content-length", tostring(#shaped))
end

-- Seeds 001 and 002 write status words in lower case (seed 002 says "queued" for PENDING);
-- the canonical surface and gRPC keep the enum's names.
local SEED_STATUS_WORDS = {
  seed001 = {PENDING = "pending", RUNNING = "running", COMPLETED = "completed",
             FAILED = "failed", CANCELLED = "cancelled"},
  seed002 = {PENDING = "queued", RUNNING = "running", COMPLETED = "completed",
             FAILED = "failed", CANCELLED = "cancelled"},
}

local function seed_status_words(response_handle, surface)
  local words = SEED_STATUS_WORDS[surface]
  local kind = response_handle:headers():get("content-type") or ""
  if words == nil or not string.find(kind, "json", 1, true) then
    return
  end
  local body = response_handle:body()
  if body == nil then
    return
  end
  local text = body:getBytes(0, body:length())
  local shaped, count = string.gsub(text, '"status":"(%u+)"', function(word)
    local lower = words[word]
    if lower ~= nil then
      return '"status":"' .. lower .. '"'
    end
  end)
  if count > 0 then
    body:setBytes(shaped)
    response_handle:headers():replace("content-length", tostring(#shaped))
  end
end

-- Seconds per window of each rate limit, by its token count (rendered from --rate-limit).
local RATE_WINDOWS = {--RATE_WINDOWS--}

-- Seed 001 defines X-RateLimit-Reset as the Unix time when the limit resets: when the bucket
-- that reports (it refills continuously, limit tokens per window) is full again.
local function absolute_rate_limit_reset(headers)
  local limit = headers:get("x-ratelimit-limit")
  local remaining = tonumber(headers:get("x-ratelimit-remaining") or "")
  local window = limit and RATE_WINDOWS[limit]
  if window == nil or remaining == nil then
    return
  end
  local tokens = tonumber(limit)
  local wait = math.ceil(math.max(tokens - remaining, 0) * window / tokens)
  headers:replace("x-ratelimit-reset", tostring(os.time() + wait))
end

-- A refusal by the server's per-tenant rate limit (x-ratelimit-scope: tenant) carries the
-- tenant's X-RateLimit-* (Reset already a Unix time); the per-address limiter above adds its
-- own after them. The tenant's limit is the one that refused: its values are kept alone.
local TENANT_HEADERS = {"x-ratelimit-limit", "x-ratelimit-remaining", "x-ratelimit-reset"}

local function tenant_rate_limit_headers(headers)
  for _, name in ipairs(TENANT_HEADERS) do
    local first = headers:getAtIndex(name, 0)
    if first ~= nil then
      headers:replace(name, first)
    end
  end
end

function envoy_on_response(response_handle)
  local meta = response_handle:metadata()
  local rule = meta:get("rule") or ""
  local surface = meta:get("surface") or "canonical"
  local headers = response_handle:headers()
  local status = headers:get(":status") or ""
  if status == "200" and headers:get("access-control-allow-methods") ~= nil then
    -- The CORS filter's answer to a preflight (only those carry the allowed methods): a
    -- preflight has no content, so 204 as browsers and the issue expect.
    headers:replace(":status", "204")
    return
  end
  if headers:get("x-ratelimit-scope") == "tenant" then
    tenant_rate_limit_headers(headers)
  else
    absolute_rate_limit_reset(headers)
  end
  if string.sub(status, 1, 1) == "4" or string.sub(status, 1, 1) == "5" then
    seed_error_body(response_handle, status, surface)
    return
  end
  if status ~= "200" then
    return
  end
  if rule == "" then
    seed_status_words(response_handle, surface)
    return
  end
  if rule == "created" then
    headers:replace(":status", "201")
    seed_status_words(response_handle, surface)
  elseif rule == "no_content" and response_handle:streamInfo():protocol() == "HTTP/2" then
    -- Over HTTP/2 a 204 cannot be followed by the transcoder's trailers; those clients
    -- get 200 with the cancelled task.
    seed_status_words(response_handle, surface)
  elseif rule == "no_content" then
    headers:replace(":status", "204")
    headers:remove("content-type")
    headers:remove("content-length")
    for chunk in response_handle:bodyChunks() do
      chunk:setBytes("")
    end
  elseif rule == "health" then
    local body = response_handle:body()
    local text = body:getBytes(0, body:length())
    if string.find(text, '"status":"unhealthy"', 1, true) then
      response_handle:headers():replace(":status", "503")
    end
  end
end
