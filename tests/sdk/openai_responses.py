"""The real `openai` SDK's Responses API and model lookup against the gateway.
Usage: openai_responses.py BASE_URL MODEL PROVIDER_MODEL; prints one JSON line of what it saw."""
import json
import sys

import openai

base, model, provider_model = sys.argv[1], sys.argv[2], sys.argv[3]
client = openai.OpenAI(base_url=f"{base}/v1", api_key="sk-not-used-by-the-gateway")

# Not streamed: the SDK's own parsing (output_text, usage) of what the provider answered.
r = client.responses.create(model=model, input="Hello!", instructions="Be brief.", max_output_tokens=64)
assert r.output_text.strip(), r
assert r.usage.total_tokens == r.usage.input_tokens + r.usage.output_tokens > 0, r.usage

# Streamed: the documented loop over typed events, ending with response.completed.
text, kinds, completed = "", [], None
for event in client.responses.create(model=model, input=[{"role": "user", "content": "Hello!"}], stream=True):
    kinds.append(event.type)
    if event.type == "response.output_text.delta":
        text += event.delta
    if event.type == "response.completed":
        completed = event.response
assert text == r.output_text, (text, r.output_text)
assert kinds[0] == "response.created" and completed is not None, kinds
assert completed.usage.output_tokens == r.usage.output_tokens, completed.usage

# Model lookup: the route's model, and the provider's id (it holds slashes).
m = client.models.retrieve(model)
assert m.id == model and m.object == "model", m
try:
    client.models.retrieve("no-such-model")
    raise AssertionError("a model that is not configured was found")
except openai.NotFoundError as e:
    assert e.body["code"] == "model_not_found", e.body

print(json.dumps({
    "json_usage": r.usage.model_dump(),
    "stream_usage": completed.usage.model_dump(),
    "events": len(kinds),
    "model_id": m.id,
    "text": text,
}))
