"""`pagoda serve` driven by the official `openai` Python client (and raw HTTP for SSE framing).

The server runs on a loopback port with a tiny random-weight Qwen3-shaped checkpoint that carries
the real Qwen3 tokenizer and chat template (tools/make_random_checkpoint). Its text is gibberish,
so the tests check behaviour that does not depend on the words: shapes and fields of every
response, streaming vs non-streaming agreement (greedy), n > 1, stop strings, logprobs, usage,
errors with their status codes, auth, the parsers on forced tokens, tokenization against HF
`tokenizers`, and that a client disconnect frees the request's KV blocks.

Run: python3 -m pytest tests/integration -q   (needs build/bin/pagoda and build/bin/make_random_checkpoint;
PAGODA_BUILD_DIR overrides the build folder)
"""

import http.client
import json
import os
import re
import subprocess
import tempfile
import time

import openai
import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
BUILD = os.environ.get("PAGODA_BUILD_DIR", os.path.join(ROOT, "build"))
SHARED = os.environ.get("PAGODA_SHARED_DIR", os.path.join(os.path.dirname(ROOT), "shared"))
MODEL_NAME = "tiny-qwen3"


def start_server(model_dir, *extra, binary="pagoda", env=None):
    cmd = [os.path.join(BUILD, "bin", binary), "serve", model_dir, "--host", "127.0.0.1", "--port", "0",
           "--served-model-name", MODEL_NAME, "--max-model-len", "512", "--num-kv-blocks", "256",
           "--max-num-seqs", "16", "--generation-config", "vllm", *extra]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env=None if env is None else {**os.environ, **env})
    line = proc.stdout.readline()
    m = re.search(r"listening on [\d.]+:(\d+)", line)
    if not m:
        proc.kill()
        raise RuntimeError("server did not start: " + line + proc.stderr.read())
    return proc, int(m.group(1))


def stop_server(proc):
    proc.terminate()
    try:
        rc = proc.wait(timeout=30)
    except subprocess.TimeoutExpired:
        proc.kill()
        raise
    assert rc == 0, proc.stderr.read()


@pytest.fixture(scope="session")
def model_dir():
    d = tempfile.mkdtemp(prefix="pagoda_it_")
    subprocess.run([os.path.join(BUILD, "bin", "make_random_checkpoint"), os.path.join(d, "model"), "--preset", "tiny",
                    "--tokenizer-dir", os.path.join(SHARED, "tokenizers", "qwen3")], check=True, capture_output=True)
    return os.path.join(d, "model")


@pytest.fixture(scope="session")
def server(model_dir):
    proc, port = start_server(model_dir, "--enable-auto-tool-choice", "--tool-call-parser", "hermes",
                              "--reasoning-parser", "qwen3")
    yield port
    stop_server(proc)


@pytest.fixture
def client(server):
    return openai.OpenAI(base_url=f"http://127.0.0.1:{server}/v1", api_key="unused", max_retries=0, timeout=120)


def get(port, path):
    c = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    c.request("GET", path)
    r = c.getresponse()
    return r.status, r.read().decode()


def metric(port, name):
    _, text = get(port, "/metrics")
    m = re.search(r"^pagoda:" + name + r"\{[^}]*\} ([0-9.e+-]+)$", text, re.M)
    assert m, f"no metric {name}"
    return float(m.group(1))


MESSAGES = [{"role": "system", "content": "You are terse."}, {"role": "user", "content": "Name three colours."}]


def test_models_health_version(server, client):
    models = client.models.list()
    assert [m.id for m in models.data] == [MODEL_NAME]
    assert models.data[0].max_model_len == 512
    assert get(server, "/health")[0] == 200
    assert get(server, "/ping")[0] == 200
    status, body = get(server, "/version")
    assert status == 200 and "version" in json.loads(body)


def test_completion_n_and_usage(client):
    r = client.completions.create(model=MODEL_NAME, prompt="Once upon a time", max_tokens=6, n=2, temperature=0,
                                  extra_body={"ignore_eos": True})
    assert r.object == "text_completion" and r.id.startswith("cmpl-")
    assert sorted(c.index for c in r.choices) == [0, 1]
    assert all(c.finish_reason == "length" for c in r.choices)
    assert r.choices[0].text == r.choices[1].text  # greedy: both completions agree
    assert r.usage.completion_tokens == 12
    assert r.usage.prompt_tokens > 0 and r.usage.total_tokens == r.usage.prompt_tokens + 12


def test_completion_stream_equals_non_stream(client):
    kw = dict(model=MODEL_NAME, prompt=[1, 2, 3, 4, 5], max_tokens=10, temperature=0, extra_body={"ignore_eos": True})
    full = client.completions.create(**kw).choices[0].text
    chunks = list(client.completions.create(stream=True, stream_options={"include_usage": True}, **kw))
    text = "".join(c.choices[0].text for c in chunks if c.choices)
    assert text == full
    assert [c.choices[0].finish_reason for c in chunks if c.choices][-1] == "length"
    assert chunks[-1].usage.completion_tokens == 10 and chunks[-1].usage.prompt_tokens == 5
    assert not chunks[-1].choices


def test_chat_stream_equals_non_stream(client):
    kw = dict(model=MODEL_NAME, messages=MESSAGES, max_tokens=12, temperature=0,
              extra_body={"ignore_eos": True, "chat_template_kwargs": {"enable_thinking": False}})
    full = client.chat.completions.create(**kw)
    assert full.object == "chat.completion" and full.id.startswith("chatcmpl-")
    msg = full.choices[0].message
    assert msg.role == "assistant"
    stream = list(client.chat.completions.create(stream=True, **kw))
    assert stream[0].choices[0].delta.role == "assistant"
    content = "".join(c.choices[0].delta.content or "" for c in stream if c.choices)
    reasoning = "".join(getattr(c.choices[0].delta, "reasoning_content", None) or "" for c in stream if c.choices)
    assert content == (msg.content or "")
    assert reasoning == (getattr(msg, "reasoning_content", None) or "")
    assert stream[-1].choices[0].finish_reason == full.choices[0].finish_reason == "length"


def concurrent_streams_equal_non_stream(client, streams=16, max_tokens=200, rounds=3):
    # Many streams at once: every output of every stream reaches its client once, in order (the
    # server's output threads must never process one request on two threads). Seeded sampling is
    # independent of the batch (engine invariance), so each stream equals the same request alone.
    from concurrent.futures import ThreadPoolExecutor

    def kw(i):
        return dict(model=MODEL_NAME, prompt=f"Request {i}:", max_tokens=max_tokens, temperature=1, seed=100 + i,
                    extra_body={"ignore_eos": True})

    alone = [client.completions.create(**kw(i)).choices[0].text for i in range(streams)]

    def stream(i):
        chunks = list(client.completions.create(stream=True, stream_options={"include_usage": True}, **kw(i)))
        return "".join(c.choices[0].text for c in chunks if c.choices), chunks[-1].usage.completion_tokens

    for _ in range(rounds):
        with ThreadPoolExecutor(streams) as pool:
            got = list(pool.map(stream, range(streams)))
        for i, (text, n) in enumerate(got):
            assert n == max_tokens
            assert text == alone[i], i


def test_concurrent_streams_equal_non_stream(client):
    concurrent_streams_equal_non_stream(client)


def test_stop_string(client):
    kw = dict(model=MODEL_NAME, prompt="The", max_tokens=16, temperature=0, extra_body={"ignore_eos": True})
    text = client.completions.create(**kw).choices[0].text
    if len(text) < 4:
        pytest.skip("greedy text too short to stop inside")
    stop = text[2:4]
    r = client.completions.create(stop=[stop], **kw).choices[0]
    assert r.finish_reason == "stop"
    assert r.text == text[: text.find(stop)]
    assert r.model_extra.get("stop_reason") == stop
    streamed = list(client.completions.create(stop=[stop], stream=True, **kw))
    assert "".join(c.choices[0].text for c in streamed if c.choices) == r.text


def test_logprobs(client):
    r = client.chat.completions.create(model=MODEL_NAME, messages=MESSAGES, max_tokens=4, temperature=0, logprobs=True,
                                       top_logprobs=2, extra_body={"ignore_eos": True})
    content = r.choices[0].logprobs.content
    assert len(content) == 4
    for t in content:
        assert t.logprob <= 0 and len(t.top_logprobs) == 2
        assert t.top_logprobs[0].logprob >= t.top_logprobs[1].logprob
        assert abs(t.top_logprobs[0].logprob - t.logprob) < 1e-5  # greedy picks the best token
    c = client.completions.create(model=MODEL_NAME, prompt="Hi", max_tokens=3, temperature=0, logprobs=1,
                                  extra_body={"ignore_eos": True})
    lp = c.choices[0].logprobs
    assert len(lp.tokens) == len(lp.token_logprobs) == len(lp.top_logprobs) == 3
    assert "".join(lp.tokens) == c.choices[0].text


def test_errors(server, client):
    with pytest.raises(openai.NotFoundError) as e:
        client.completions.create(model="nope", prompt="x", max_tokens=1)
    assert "The model `nope` does not exist." in str(e.value)
    with pytest.raises(openai.BadRequestError) as e:
        client.completions.create(model=MODEL_NAME, prompt="x", max_tokens=100000)
    assert "maximum context length is 512 tokens" in str(e.value)
    with pytest.raises(openai.BadRequestError) as e:
        client.completions.create(model=MODEL_NAME, prompt="x", temperature=-1)
    assert "temperature" in str(e.value)
    with pytest.raises(openai.BadRequestError):
        client.completions.create(model=MODEL_NAME, prompt="x", max_tokens=1, extra_body={"stream_options": {}})
    with pytest.raises(openai.BadRequestError):
        client.chat.completions.create(model=MODEL_NAME, messages=[], max_tokens=1)
    # Raw: malformed JSON and a wrong content type are 400 with the OpenAI error body.
    for body, ctype in ((b"{not json", "application/json"), (b"{}", "text/plain")):
        c = http.client.HTTPConnection("127.0.0.1", server, timeout=30)
        c.request("POST", "/v1/completions", body=body, headers={"Content-Type": ctype})
        r = c.getresponse()
        err = json.loads(r.read())
        assert r.status == 400 and err["error"]["code"] == 400 and err["error"]["type"] == "BadRequestError"


def test_sse_framing_raw(server):
    c = http.client.HTTPConnection("127.0.0.1", server, timeout=60)
    body = json.dumps({"model": MODEL_NAME, "prompt": "Hello", "max_tokens": 5, "stream": True, "ignore_eos": True})
    c.request("POST", "/v1/completions", body=body, headers={"Content-Type": "application/json"})
    r = c.getresponse()
    assert r.status == 200
    assert r.getheader("Content-Type").startswith("text/event-stream")
    assert r.getheader("Transfer-Encoding") == "chunked"
    raw = r.read().decode()
    events = raw.split("\n\n")
    assert events[-1] == "" and events[-2] == "data: [DONE]"
    for e in events[:-2]:
        assert e.startswith("data: ")
        j = json.loads(e[len("data: "):])
        assert j["object"] == "text_completion"


def test_tokenize_matches_hf_tokenizers(server, client):
    tokenizers = pytest.importorskip("tokenizers")
    hf = tokenizers.Tokenizer.from_file(os.path.join(SHARED, "tokenizers", "qwen3", "tokenizer.json"))
    text = "Hello, 世界! Ünïcödé and   spaces\n\ttabs 12345"
    c = http.client.HTTPConnection("127.0.0.1", server, timeout=30)
    c.request("POST", "/tokenize", body=json.dumps({"prompt": text}), headers={"Content-Type": "application/json"})
    got = json.loads(c.getresponse().read())
    assert got["tokens"] == hf.encode(text).ids and got["count"] == len(got["tokens"])
    c.request("POST", "/detokenize", body=json.dumps({"tokens": got["tokens"]}),
              headers={"Content-Type": "application/json"})
    assert json.loads(c.getresponse().read())["prompt"] == hf.decode(got["tokens"], skip_special_tokens=False)


def test_reasoning_and_tool_parsers_on_forced_tokens(client):
    # allowed_token_ids forces the output: "<think>" x3 → the reasoning parser takes the first as
    # the opening tag and the rest as reasoning; nothing is content.
    r = client.chat.completions.create(model=MODEL_NAME, messages=MESSAGES, max_tokens=3, temperature=0,
                                       extra_body={"allowed_token_ids": [151667], "ignore_eos": True})
    msg = r.choices[0].message
    assert msg.model_extra.get("reasoning_content") == "<think><think>"
    assert msg.content is None
    # "<tool_call>" x3 with tools: not valid JSON → plain content, no tool calls (vLLM's fallback).
    tools = [{"type": "function", "function": {"name": "get_weather", "parameters": {"type": "object"}}}]
    r = client.chat.completions.create(model=MODEL_NAME, messages=MESSAGES, max_tokens=3, temperature=0, tools=tools,
                                       extra_body={"allowed_token_ids": [151657], "ignore_eos": True,
                                                   "chat_template_kwargs": {"enable_thinking": False}})
    assert r.choices[0].message.content == "<tool_call>" * 3
    assert not r.choices[0].message.tool_calls
    assert r.choices[0].finish_reason == "length"


def test_disconnect_frees_kv_blocks(server):
    c = http.client.HTTPConnection("127.0.0.1", server, timeout=60)
    body = json.dumps({"model": MODEL_NAME, "prompt": "Tell a long story", "max_tokens": 400, "stream": True,
                       "ignore_eos": True})
    c.request("POST", "/v1/completions", body=body, headers={"Content-Type": "application/json"})
    r = c.getresponse()
    r.read1(64)
    assert metric(server, "num_requests_running") >= 0
    c.sock.close()
    c.close()
    deadline = time.time() + 20
    while time.time() < deadline:
        if metric(server, "num_requests_running") == 0 and metric(server, "kv_cache_usage_perc") == 0:
            break
        time.sleep(0.1)
    assert metric(server, "num_requests_running") == 0
    assert metric(server, "kv_cache_usage_perc") == 0


def test_api_key(model_dir):
    proc, port = start_server(model_dir, "--api-key", "s3cret")
    try:
        bad = openai.OpenAI(base_url=f"http://127.0.0.1:{port}/v1", api_key="wrong", max_retries=0)
        with pytest.raises(openai.AuthenticationError):
            bad.models.list()
        good = openai.OpenAI(base_url=f"http://127.0.0.1:{port}/v1", api_key="s3cret", max_retries=0)
        assert good.models.list().data[0].id == MODEL_NAME
        assert get(port, "/health")[0] == 200  # outside /v1: no key needed
    finally:
        stop_server(proc)


def test_request_and_stats_logs(model_dir):
    # --enable-log-requests: a line when each request arrives and when it ends, naming its id,
    # tokens and finish reasons; the periodic stats line (vLLM's) reports the traffic. Without the
    # flags (and with --disable-log-stats) neither appears.
    proc, port = start_server(model_dir, "--enable-log-requests", env={"PAGODA_LOG_STATS_INTERVAL": "0.2"})
    try:
        c = openai.OpenAI(base_url=f"http://127.0.0.1:{port}/v1", api_key="unused", max_retries=0)
        r = c.completions.create(model=MODEL_NAME, prompt="hello there", max_tokens=6, n=2, temperature=0.8,
                                 seed=11, extra_body={"ignore_eos": True})
        chunks = list(c.chat.completions.create(model=MODEL_NAME, messages=MESSAGES, max_tokens=4, stream=True,
                                                extra_body={"ignore_eos": True}))
        # A client that goes away mid-stream: logged as aborted, then as finished by abort.
        h = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
        h.request("POST", "/v1/completions", headers={"Content-Type": "application/json"},
                  body=json.dumps({"model": MODEL_NAME, "prompt": "go on", "max_tokens": 400, "stream": True,
                                   "ignore_eos": True}))
        first = h.getresponse().read1(4096).decode()
        gone_id = re.search(r'"id":"(cmpl-[0-9a-f]+)"', first).group(1)
        h.sock.close()
        h.close()
        deadline = time.time() + 20
        while metric(port, "num_requests_running") > 0 and time.time() < deadline:
            time.sleep(0.05)
        time.sleep(0.6)  # at least two stats intervals after the traffic
    finally:
        proc.terminate()
        _, err = proc.communicate(timeout=30)
    assert proc.returncode == 0, err
    p = r.usage.prompt_tokens
    assert re.search(rf"Received request {r.id}: {p} prompt tokens, 2 choices, SamplingParams\(n=2, "
                     r"temperature=0\.8,.* seed=11, max_tokens=6,.*ignore_eos=True", err), err
    assert f"Finished request {r.id}: finish_reason length,length, {p} prompt + 12 completion tokens, " in err, err
    chat_id = chunks[0].id
    assert re.search(rf"Received request {chat_id}: \d+ prompt tokens, 1 choice, streamed, ", err), err
    assert re.search(rf"Finished request {chat_id}: finish_reason length, \d+ prompt \+ 4 completion tokens", err), err
    assert f"Aborted request {gone_id}: the client went away" in err, err
    assert re.search(rf"Finished request {gone_id}: finish_reason abort, \d+ prompt \+ \d+ completion tokens", err), err
    stats = re.findall(r"Avg prompt throughput: ([\d.]+) tokens/s, Avg generation throughput: ([\d.]+) tokens/s, "
                       r"Running: (\d+) reqs, Waiting: (\d+) reqs, KV cache usage: ([\d.]+)%, "
                       r"Prefix cache hit rate: ([\d.]+)%", err)
    assert stats, err
    assert any(float(g) > 0 for _, g, *_ in stats), stats
    assert stats[-1][2:5] == ("0", "0", "0.0"), stats  # every request done, every KV block back

    proc, port = start_server(model_dir, "--disable-log-stats", env={"PAGODA_LOG_STATS_INTERVAL": "0.2"})
    try:
        c = openai.OpenAI(base_url=f"http://127.0.0.1:{port}/v1", api_key="unused", max_retries=0)
        c.completions.create(model=MODEL_NAME, prompt="hello", max_tokens=4)
        time.sleep(0.6)
    finally:
        proc.terminate()
        _, err = proc.communicate(timeout=30)
    assert proc.returncode == 0, err
    assert "Avg prompt throughput" not in err and "Received request" not in err, err


def parse_metrics(text):
    """{name: value} for unlabelled-beyond-the-defaults series, {name: [(le, v), ...]} for buckets."""
    values, buckets = {}, {}
    for line in text.splitlines():
        if line.startswith("#") or not line:
            continue
        m = re.match(r'^pagoda:(\w+)\{([^}]*)\} (\S+)$', line)
        assert m, line
        name, labels, v = m.group(1), m.group(2), float(m.group(3))
        assert 'model_name="' + MODEL_NAME + '"' in labels and 'engine="0"' in labels, line
        if name.endswith("_bucket"):
            le = re.search(r'le="([^"]+)"', labels).group(1)
            buckets.setdefault(name[:-len("_bucket")], []).append((float(le), v))
        elif 'finished_reason="' in labels:
            values[name + "/" + re.search(r'finished_reason="(\w+)"', labels).group(1)] = v
        elif 'position="' in labels:
            values[name + "/" + re.search(r'position="(\d+)"', labels).group(1)] = v
        else:
            values[name] = v
    return values, buckets


def test_metrics_series_after_known_traffic(model_dir):
    # A fresh server, 3 requests of 5 tokens each: every counter and histogram of API.md's list
    # (the engine's request phases and step tokens included) must tell exactly that.
    proc, port = start_server(model_dir)
    try:
        c = openai.OpenAI(base_url=f"http://127.0.0.1:{port}/v1", api_key="unused", max_retries=0)
        prompts = ["alpha beta", "gamma delta epsilon", "zeta"]
        usages = [c.completions.create(model=MODEL_NAME, prompt=t, max_tokens=5, extra_body={"ignore_eos": True}).usage
                  for t in prompts]
        _, text = get(port, "/metrics")
    finally:
        stop_server(proc)
    values, buckets = parse_metrics(text)
    prompt_tokens = sum(u.prompt_tokens for u in usages)
    assert values["prompt_tokens_total"] == prompt_tokens  # prompts shorter than a block: no cache hits
    assert values["generation_tokens_total"] == 15
    assert values["request_success_total/length"] == 3 and values["request_success_total/stop"] == 0
    assert values["num_requests_running"] == 0 and values["num_requests_waiting"] == 0
    for name in ["time_to_first_token_seconds", "e2e_request_latency_seconds", "request_time_per_output_token_seconds",
                 "request_prompt_tokens", "request_generation_tokens", "request_queue_time_seconds",
                 "request_prefill_time_seconds", "request_decode_time_seconds", "request_inference_time_seconds"]:
        assert values[name + "_count"] == 3, name
    assert values["inter_token_latency_seconds_count"] == 3 * 4
    assert values["request_prompt_tokens_sum"] == prompt_tokens
    assert values["request_generation_tokens_sum"] == 15
    # Engine steps: every prompt token once, then each output token but the last fed back.
    assert values["iteration_tokens_total_sum"] == prompt_tokens + 3 * 4
    assert values["iteration_tokens_total_count"] >= 5
    assert abs(values["request_prefill_time_seconds_sum"] + values["request_decode_time_seconds_sum"]
               - values["request_inference_time_seconds_sum"]) < 1e-6
    for name, bs in buckets.items():
        les = [le for le, _ in bs]
        counts = [v for _, v in bs]
        assert les == sorted(les) and les[-1] == float("inf"), name
        assert counts == sorted(counts) and counts[-1] == values[name + "_count"], name


def test_bad_stats_interval_is_named(model_dir):
    proc = subprocess.run([os.path.join(BUILD, "bin", "pagoda"), "serve", model_dir, "--port", "0"],
                          capture_output=True, text=True, timeout=60, env={**os.environ, "PAGODA_LOG_STATS_INTERVAL": "soon"})
    assert proc.returncode == 1
    assert "PAGODA_LOG_STATS_INTERVAL" in proc.stderr and "'soon'" in proc.stderr, proc.stderr


# ---- speculative decoding (n-gram) ------------------------------------------------------------

SPEC = '{"method": "ngram", "num_speculative_tokens": 4, "prompt_lookup_max": 3, "prompt_lookup_min": 1}'


def spec_traffic(port):
    """Greedy completions with logprobs, a seeded streamed chat: what must not change with drafts."""
    c = openai.OpenAI(base_url=f"http://127.0.0.1:{port}/v1", api_key="unused", max_retries=0, timeout=120)
    prompt = "one two three four one two three four one two three four one two"
    comp = c.completions.create(model=MODEL_NAME, prompt=prompt, max_tokens=48, temperature=0, logprobs=2,
                                extra_body={"ignore_eos": True})
    stream = c.chat.completions.create(model=MODEL_NAME, messages=[{"role": "user", "content": prompt}],
                                       max_tokens=40, temperature=0.8, seed=7, stream=True,
                                       stream_options={"include_usage": True},
                                       extra_body={"ignore_eos": True, **NO_THINK})
    text, usage = "", None
    for chunk in stream:
        if chunk.usage:
            usage = chunk.usage
        for ch in chunk.choices:
            text += ch.delta.content or ""
    # Guided decoding: the grammar follows every accepted draft.
    rf = {"type": "json_schema", "json_schema": {"name": "pick", "schema": PICK_SCHEMA}}
    guided = [c.chat.completions.create(model=MODEL_NAME, messages=MESSAGES, max_tokens=200, temperature=t, seed=1,
                                        response_format=rf, extra_body=NO_THINK)
              for t in (0, 1)]
    return comp, text, usage, [(g.choices[0].message.content, g.choices[0].finish_reason, g.usage.completion_tokens)
                               for g in guided]


def test_speculative_decoding_matches_plain_decoding(model_dir, server):
    plain_comp, plain_chat, plain_usage, plain_guided = spec_traffic(server)
    proc, port = start_server(model_dir, "--speculative-config", SPEC)
    try:
        comp, chat, usage, guided = spec_traffic(port)
        _, metrics = get(port, "/metrics")
    finally:
        stop_server(proc)
    assert comp.choices[0].text == plain_comp.choices[0].text
    assert comp.usage.completion_tokens == plain_comp.usage.completion_tokens == 48
    got, want = comp.choices[0].logprobs, plain_comp.choices[0].logprobs
    assert got.tokens == want.tokens and len(got.tokens) == 48
    assert all(abs(a - b) < 1e-3 for a, b in zip(got.token_logprobs, want.token_logprobs))
    assert chat == plain_chat and usage.completion_tokens == plain_usage.completion_tokens == 40
    assert guided == plain_guided
    for content, reason, _ in guided:
        if reason == "stop":
            check_pick(json.loads(content))
    values, _ = parse_metrics(metrics)
    drafts, drafted, accepted = (values["spec_decode_num_" + k + "_total"] for k in ("drafts", "draft_tokens",
                                                                                       "accepted_tokens"))
    assert drafts > 0 and drafted <= 4 * drafts and accepted <= drafted
    assert accepted > 0  # the random model repeats itself
    assert sum(v for k, v in values.items() if k.startswith("spec_decode_num_accepted_tokens_per_pos_total/")) == accepted
    assert values["generation_tokens_total"] == 48 + 40 + sum(n for _, _, n in guided)


@pytest.mark.parametrize("config,named", [
    ('{"method": "eagle", "num_speculative_tokens": 2}', 'method "eagle" is not supported'),
    ('{"method": "ngram"}', "num_speculative_tokens"),
    ('{"method": "ngram", "num_speculative_tokens": 2, "lookahead": 1}', 'unknown key "lookahead"'),
    ("ngram", "not valid JSON"),
])
def test_bad_speculative_config_is_named(model_dir, config, named):
    stderr = serve_start_error(model_dir, "--speculative-config", config)
    assert named in stderr and "--speculative-config" in stderr, stderr


def serve_start_error(model_dir, *flags):
    """`pagoda serve` with flags that must stop it at start-up: exit status 1; returns stderr."""
    proc = subprocess.run([os.path.join(BUILD, "bin", "pagoda"), "serve", model_dir, "--port", "0", *flags],
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 1, proc.stderr
    return proc.stderr


# ---- FP8 weights (--quantization fp8) ----------------------------------------------------------
# Numerics are checked against transformers in tests/model/golden_test.cc; here: the flag reaches
# the engine through `serve`, which then answers as usual, and bad values are named at start-up.

def test_quantization_fp8_serves(model_dir):
    proc, port = start_server(model_dir, "-q", "fp8")
    try:
        c = openai.OpenAI(base_url=f"http://127.0.0.1:{port}/v1", api_key="unused", max_retries=0, timeout=120)
        kw = dict(model=MODEL_NAME, prompt="The quick brown fox", max_tokens=24, temperature=0, extra_body={"ignore_eos": True})
        full = c.completions.create(**kw)
        streamed = "".join(ch.choices[0].text for ch in c.completions.create(stream=True, **kw))
    finally:
        stop_server(proc)
    assert full.usage.completion_tokens == 24
    assert streamed == full.choices[0].text


@pytest.mark.parametrize("value,named", [
    ("awq", "--quantization awq is not supported"),
    ("int8", "--quantization int8 is not supported"),
])
def test_bad_quantization_is_named(model_dir, value, named):
    stderr = serve_start_error(model_dir, "--quantization", value)
    assert named in stderr, stderr


# ---- structured output (guided decoding) ----------------------------------------------------
# The random model's text is gibberish, which is what makes these meaningful: only the grammar
# can make it JSON. Where a schema has free strings, allowed_token_ids narrows the vocabulary to
# single JSON characters (on top of the grammar) so that strings end within the token budget.

NO_THINK = {"chat_template_kwargs": {"enable_thinking": False}}
JSON_CHARS = '{}[]":, 0123456789-._abcdefghijklmnopqrstuvwxyz'


def json_char_ids(port):
    ids = []
    for ch in JSON_CHARS:
        c = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
        c.request("POST", "/tokenize", body=json.dumps({"prompt": ch, "add_special_tokens": False}),
                  headers={"Content-Type": "application/json"})
        toks = json.loads(c.getresponse().read())["tokens"]
        assert len(toks) == 1, ch
        ids.append(toks[0])
    return ids + [151645]  # <|im_end|>: the EOS that ends a finished document


def test_response_format_json_object(server, client):
    extra = dict(NO_THINK, allowed_token_ids=json_char_ids(server))
    done = 0
    for seed in range(3):
        r = client.chat.completions.create(model=MODEL_NAME, messages=MESSAGES, max_tokens=400, temperature=1,
                                           seed=seed, response_format={"type": "json_object"}, extra_body=extra)
        c = r.choices[0]
        if c.finish_reason == "length":
            continue
        assert c.finish_reason == "stop"
        assert isinstance(json.loads(c.message.content), dict), c.message.content
        done += 1
    assert done >= 2


PICK_SCHEMA = {"type": "object",
               "properties": {"n": {"type": "integer"}, "flag": {"type": "boolean"},
                              "colour": {"enum": ["red", "green"]},
                              "scores": {"type": "array", "items": {"type": "number"}, "maxItems": 2}},
               "required": ["n", "flag", "colour"]}


def check_pick(obj):
    assert isinstance(obj, dict) and set(obj) <= {"n", "flag", "colour", "scores"}
    assert isinstance(obj["n"], int) and not isinstance(obj["n"], bool)
    assert isinstance(obj["flag"], bool)
    assert obj["colour"] in ("red", "green")
    if "scores" in obj:
        assert len(obj["scores"]) <= 2 and all(isinstance(x, (int, float)) for x in obj["scores"])


def test_response_format_json_schema_and_stream(client):
    rf = {"type": "json_schema", "json_schema": {"name": "pick", "schema": PICK_SCHEMA}}
    for seed in range(3):
        kw = dict(model=MODEL_NAME, messages=MESSAGES, max_tokens=300, temperature=1, seed=seed, response_format=rf,
                  extra_body=NO_THINK)
        r = client.chat.completions.create(**kw)
        c = r.choices[0]
        assert c.finish_reason == "stop", c.message.content
        check_pick(json.loads(c.message.content))
        chunks = list(client.chat.completions.create(stream=True, **kw))
        assert "".join(x.choices[0].delta.content or "" for x in chunks if x.choices) == c.message.content
        assert chunks[-1].choices[0].finish_reason == "stop"
    # vLLM's structured_outputs extra does the same.
    r = client.chat.completions.create(model=MODEL_NAME, messages=MESSAGES, max_tokens=300, temperature=1, seed=7,
                                       extra_body=dict(NO_THINK, structured_outputs={"json": PICK_SCHEMA}))
    check_pick(json.loads(r.choices[0].message.content))


def test_structured_output_errors(client):
    with pytest.raises(openai.BadRequestError) as e:
        client.chat.completions.create(model=MODEL_NAME, messages=MESSAGES, max_tokens=5, response_format={
            "type": "json_schema", "json_schema": {"name": "x", "schema": {"type": "frobnicate"}}})
    assert "frobnicate" in str(e.value) and "response_format" in str(e.value)
    with pytest.raises(openai.BadRequestError):
        client.chat.completions.create(model=MODEL_NAME, messages=MESSAGES, max_tokens=5,
                                       response_format={"type": "json_schema"})


WEATHER = {"type": "function", "function": {
    "name": "get_weather", "description": "Weather in a city",
    "parameters": {"type": "object", "properties": {"city": {"type": "string"}, "days": {"type": "integer"}},
                   "required": ["city", "days"]}}}
TIME = {"type": "function", "function": {
    "name": "get_time", "parameters": {"type": "object", "properties": {"zone": {"enum": ["utc", "cet"]}},
                                       "required": ["zone"]}}}
COUNT = {"type": "function", "function": {
    "name": "get_count", "parameters": {"type": "object", "properties": {"n": {"type": "integer"}}, "required": ["n"]}}}


def check_call(name, arguments):
    args = json.loads(arguments)
    if name == "get_weather":
        assert isinstance(args["city"], str) and isinstance(args["days"], int) and set(args) == {"city", "days"}
    elif name == "get_count":
        assert set(args) == {"n"} and isinstance(args["n"], int)
    else:
        assert name == "get_time" and args == {"zone": args["zone"]} and args["zone"] in ("utc", "cet")


def test_tool_choice_named(server, client):
    extra = dict(NO_THINK, allowed_token_ids=json_char_ids(server))
    kw = dict(model=MODEL_NAME, messages=MESSAGES, max_tokens=280, temperature=1, seed=3, tools=[WEATHER, TIME],
              tool_choice={"type": "function", "function": {"name": "get_weather"}}, extra_body=extra)
    r = client.chat.completions.create(**kw)
    c = r.choices[0]
    assert c.finish_reason == "stop"  # vLLM / OpenAI: a named call finishes "stop"
    assert not c.message.content
    assert len(c.message.tool_calls) == 1
    call = c.message.tool_calls[0]
    assert call.type == "function" and call.function.name == "get_weather" and call.id.startswith("chatcmpl-tool-")
    check_call("get_weather", call.function.arguments)
    # Streaming: the first tool delta carries id, type and name; the argument fragments add up.
    chunks = [x for x in client.chat.completions.create(stream=True, **kw) if x.choices]
    deltas = [d for x in chunks for d in (x.choices[0].delta.tool_calls or [])]
    assert deltas and deltas[0].id and deltas[0].type == "function" and deltas[0].function.name == "get_weather"
    assert all(d.id is None and d.function.name is None for d in deltas[1:])
    assert "".join(d.function.arguments or "" for d in deltas) == call.function.arguments
    assert not "".join(x.choices[0].delta.content or "" for x in chunks)
    assert chunks[-1].choices[0].finish_reason == "stop"


def test_tool_choice_required(server, client):
    extra = dict(NO_THINK, allowed_token_ids=json_char_ids(server))
    done = 0
    for seed in range(5):  # tools without free strings, so that the array ends within the budget
        kw = dict(model=MODEL_NAME, messages=MESSAGES, max_tokens=280, temperature=1, seed=seed,
                  tools=[TIME, COUNT], tool_choice="required", extra_body=extra)
        r = client.chat.completions.create(**kw)
        c = r.choices[0]
        if c.finish_reason == "length":
            continue
        done += 1
        assert c.finish_reason == "tool_calls"
        assert not c.message.content and len(c.message.tool_calls) >= 1
        for call in c.message.tool_calls:
            assert call.id.startswith("chatcmpl-tool-")
            check_call(call.function.name, call.function.arguments)
        chunks = [x for x in client.chat.completions.create(stream=True, **kw) if x.choices]
        deltas = [d for x in chunks for d in (x.choices[0].delta.tool_calls or [])]
        assert [(d.function.name, d.function.arguments) for d in deltas] == \
            [(t.function.name, t.function.arguments) for t in c.message.tool_calls]
        assert chunks[-1].choices[0].finish_reason == "tool_calls"
    assert done >= 2
