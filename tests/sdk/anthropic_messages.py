"""The real `anthropic` SDK against the gateway (base_url at the gateway, as Claude-style clients
set it). Usage: anthropic_messages.py BASE_URL MODEL [count]; prints one JSON line of what it
saw. With `count`, also counts tokens (`/v1/messages/count_tokens`, where the provider serves it)."""
import json
import sys

import anthropic

base, model = sys.argv[1], sys.argv[2]
count = sys.argv[3:] == ["count"]
client = anthropic.Anthropic(base_url=base, api_key="sk-ant-client-key-never-forwarded")
messages = [{"role": "user", "content": "Hello!"}]

# Not streamed.
m = client.messages.create(model=model, max_tokens=64, system="Be brief.", messages=messages)
text = "".join(b.text for b in m.content if b.type == "text")
assert text.strip() and m.stop_reason == "end_turn", m
assert m.usage.input_tokens > 0 and m.usage.output_tokens > 0, m.usage

# Streamed, with the SDK's stream helper: text deltas, then the final message and its usage.
with client.messages.stream(model=model, max_tokens=64, messages=messages) as stream:
    streamed = "".join(stream.text_stream)
    final = stream.get_final_message()
assert streamed == text, (streamed, text)
assert final.usage.output_tokens == m.usage.output_tokens, final.usage

# A bad request gets Anthropic's error envelope, which the SDK turns into its exception.
try:
    client.messages.create(model=model, max_tokens=64, messages=[])
    raise AssertionError("an empty conversation was accepted")
except anthropic.BadRequestError as e:
    assert e.body["type"] == "error" and e.body["error"]["type"] == "invalid_request_error", e.body

counted = None
if count:
    counted = client.messages.count_tokens(model=model, messages=messages).input_tokens
    assert counted > 0, counted

print(json.dumps({
    "counted": counted,
    "json_usage": m.usage.model_dump(),
    "stream_usage": final.usage.model_dump(),
    "text": text,
}))
