"""The real `openai` SDK against the gateway: the streaming loop of OpenAI's documentation must
work whatever the gateway asked the provider for. Usage: openai_stream.py BASE_URL MODEL."""
import sys

import openai

base, model = sys.argv[1], sys.argv[2]
client = openai.OpenAI(base_url=f"{base}/v1", api_key="sk-not-used-by-the-gateway")
messages = [{"role": "user", "content": "Hello!"}]

# Not asking for usage: every chunk has a choice (the documented loop indexes choices[0]).
text = ""
for chunk in client.chat.completions.create(model=model, messages=messages, stream=True):
    text += chunk.choices[0].delta.content or ""
assert text.strip(), "no text streamed"

# Asking for usage: the last chunk has no choices and carries it, as OpenAI documents.
last = None
for chunk in client.chat.completions.create(
    model=model, messages=messages, stream=True, stream_options={"include_usage": True}
):
    last = chunk
assert last is not None and last.choices == [] and last.usage.total_tokens > 0, last

print(f"ok: {len(text)} characters streamed, usage {last.usage.total_tokens} tokens")
