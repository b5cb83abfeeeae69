"""Drives `automix serve` with the official OpenAI Python SDK (run by openai_sdk.rs).

Sends a tool-calling conversation with response_format, top_p, logprobs, top_logprobs and
user set, then a plain question; prints what the SDK parsed as JSON for the Rust test.
"""

import json
import sys

from openai import OpenAI

client = OpenAI(api_key="sk-client", base_url=sys.argv[1] + "/v1", max_retries=0)

tools = [{
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "Weather in a city",
        "parameters": {"type": "object", "properties": {"city": {"type": "string"}},
                       "required": ["city"]},
    },
}]
messages = [
    {"role": "system", "content": "You are a helpful assistant."},
    {"role": "user", "content": [{"type": "text", "text": "Weather in Rome, then Paris?"}]},
    {"role": "assistant", "content": None, "tool_calls": [{
        "id": "call_0", "type": "function",
        "function": {"name": "get_weather", "arguments": "{\"city\": \"Rome\"}"}}]},
    {"role": "tool", "tool_call_id": "call_0", "content": "sunny"},
    {"role": "user", "content": "And Paris?"},
]
first = client.chat.completions.create(
    model="automix",
    messages=messages,
    tools=tools,
    tool_choice="auto",
    response_format={"type": "json_object"},
    top_p=0.9,
    logprobs=True,
    top_logprobs=2,
    user="user-42",
)
call = first.choices[0].message.tool_calls[0]
second = client.chat.completions.create(
    model="automix", messages=[{"role": "user", "content": "What is 2+2?"}], seed=3)
print(json.dumps({
    "tool_name": call.function.name,
    "tool_arguments": call.function.arguments,
    "finish_reason": first.choices[0].finish_reason,
    "second": second.choices[0].message.content,
    "second_model": second.model,
}))
