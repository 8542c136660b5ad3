#!/usr/bin/env python3
"""Reference fixtures for pagoda's Jinja chat-template interpreter (src/chat/).

Ground truth is Hugging Face transformers itself: the real chat templates of the tokenizers in
../shared/tokenizers/{qwen3,llama3,deepseek_v3} are rendered with tokenizer.apply_chat_template
(tokenize=False), which compiles them in transformers' ImmutableSandboxedEnvironment
(trim_blocks, lstrip_blocks, loopcontrols, HF's tojson / raise_exception / strftime_now /
namespace / dict). Small feature templates are rendered with the very same compiled environment
(transformers.utils.chat_template_utils._compile_jinja_template).

Rerun from the repository root (deterministic: fixed seeds, no clocks, no randomness):
    python3 tools/make_chat_template_fixtures.py
It writes tests/chat/data/{qwen3,llama3,deepseek_v3,features}.jsonl and prints a summary.
    python3 tools/make_chat_template_fixtures.py --unicode-tables
regenerates src/chat/jinja_unicode_data.inc (code-point tables from Python's unicodedata).

Each real-template line: {"messages", "tools"?, "continue_final_message"?, "add_generation_prompt", "kwargs", then
"expected" (the rendered prompt) or "error" (the exception message) + "error_type"}.
Each feature line: {"name", "template", "context", then "expected" or "error" + "error_type" and,
when jinja2 knows it, "error_line"}.
"""
import argparse
import json
import os
import random
import sys
import traceback

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SHARED = os.path.join(os.path.dirname(REPO), "shared")
OUT_DIR = os.path.join(REPO, "tests", "chat", "data")

# ------------------------------------------------------------------ conversations

TEXTS = [
    "Hello!",
    "What is the capital of France?",
    "Paris is the capital of France.",
    "Write a haiku about autumn.",
    "  leading and trailing spaces  ",
    "\n\nnewlines around\n\n",
    "line one\nline two\r\nline three",
    "tabs\tand\tmore\ttabs",
    "",
    "   ",
    "\n",
    "你好，世界！今天天气怎么样？",
    "日本語のテキストです。",
    "한국어 문장입니다.",
    "Emoji: 👋🏽 🎉 👨‍👩‍👧‍👦 🇫🇷",
    "مرحبا بالعالم",
    "שלום עולם",
    "Combining: e\u0301 a\u0308 n\u0303 — and zero\u200bwidth",
    'Quotes: "double" and \'single\' and `back`',
    "Backslashes: C:\\Users\\name\\file.txt and \\n literally",
    "JSON-ish: {\"key\": [1, 2, {\"nested\": null}]}",
    "Special tokens in text: <|im_start|> <|eot_id|> <｜User｜>",
    "Unicode spaces:\u3000ideographic\u00a0nbsp\u2028line-sep",
    "Control chars: \x01\x1f\x7f end",
    "<tool_response>\nnot really a tool response\n</tool_response>",
    "Math: 1/3 ≈ 0.333…, π ≈ 3.14159, ∑ x² ≥ 0",
    "a" * 300,
    "Mixed 中文 English עברית 😀 text",
    "Ends with newline\n",
    "{{ not a template }} {% neither %}",
]

THINKS = [
    "Let me think step by step.",
    "\nThe user asks about X.\nI should answer briefly.\n",
    "考虑一下这个问题。",
    "",
    "multi\n\nparagraph\n\nreasoning",
]

TOOLS = [
    {
        "type": "function",
        "function": {
            "name": "get_weather",
            "description": "Get the current weather in a given location",
            "parameters": {
                "type": "object",
                "properties": {
                    "location": {"type": "string", "description": "The city and state, e.g. San Francisco, CA"},
                    "unit": {"type": "string", "enum": ["celsius", "fahrenheit"]},
                },
                "required": ["location"],
            },
        },
    },
    {
        "type": "function",
        "function": {
            "name": "search_web",
            "description": "Search the web — supports 中文 queries & \"quotes\"",
            "parameters": {
                "type": "object",
                "properties": {
                    "query": {"type": "string"},
                    "max_results": {"type": "integer", "minimum": 1, "maximum": 50, "default": 10},
                    "safe": {"type": "boolean", "default": True},
                    "threshold": {"type": "number", "default": 0.5},
                    "tiny": {"type": "number", "default": 1e-07},
                    "big": {"type": "number", "default": 1e16},
                },
                "required": ["query"],
            },
        },
    },
    {
        "type": "function",
        "function": {
            "name": "run_code",
            "description": "Execute code.\nReturns stdout.",
            "parameters": {
                "type": "object",
                "properties": {
                    "code": {"type": "string", "description": "Source with \\ backslashes and\ttabs"},
                    "options": {
                        "type": "object",
                        "properties": {"timeout": {"type": ["integer", "null"]}, "env": {"type": "object"}},
                    },
                    "items": {"type": "array", "items": {"type": "string"}},
                },
                "required": [],
            },
        },
    },
    {"type": "function", "function": {"name": "no_params", "description": "", "parameters": {"type": "object", "properties": {}}}},
]

ARGUMENTS = [
    {"location": "Paris, France", "unit": "celsius"},
    {"query": "天气 \"today\"", "max_results": 3, "safe": False, "threshold": 0.25},
    {"code": "print('hi')\nprint(\"\\\\\")", "options": {"timeout": None, "env": {}}, "items": ["a", "b"]},
    {},
    {"nested": {"list": [1, 2.5, -3, 1e-05, 123456789012, True, None], "emoji": "🎉"}},
]


def random_text(rng):
    return rng.choice(TEXTS)


def make_tool_call(rng, as_string):
    tool = rng.choice(TOOLS)["function"]["name"]
    args = rng.choice(ARGUMENTS)
    call = {"type": "function", "function": {"name": tool, "arguments": json.dumps(args, ensure_ascii=rng.random() < 0.5) if as_string else args}}
    if rng.random() < 0.5:
        call["id"] = "call_%04d" % rng.randrange(10000)
    return call


def make_conversation(rng, template):
    """One random conversation plus the apply_chat_template options for `template`."""
    messages = []
    if rng.random() < 0.5:
        messages.append({"role": "system", "content": random_text(rng)})
    turns = rng.randint(1, 4)
    # deepseek's template concatenates tool arguments as strings; the others accept both.
    args_as_string = template == "deepseek_v3" or rng.random() < 0.5
    for t in range(turns):
        messages.append({"role": "user", "content": random_text(rng)})
        last_turn = t == turns - 1
        if last_turn and rng.random() < 0.6:
            break
        msg = {"role": "assistant", "content": random_text(rng)}
        r = rng.random()
        if r < 0.25:
            msg["reasoning_content"] = rng.choice(THINKS)
        elif r < 0.4:
            msg["content"] = "<think>" + rng.choice(THINKS) + "</think>" + ("\n\n" if rng.random() < 0.5 else "") + msg["content"]
        if rng.random() < 0.3:
            msg["tool_calls"] = [make_tool_call(rng, args_as_string) for _ in range(rng.randint(1, 3))]
            if template != "llama3" and rng.random() < 0.5:
                msg["content"] = ""  # tool-call turns usually carry no text
            messages.append(msg)
            for _ in range(rng.randint(1, len(msg["tool_calls"]))):
                messages.append({"role": "tool", "content": random_text(rng)})
            if not last_turn or rng.random() < 0.5:
                messages.append({"role": "assistant", "content": random_text(rng)})
        else:
            messages.append(msg)
    if rng.random() < 0.1 and len(messages) > 1:
        messages.insert(rng.randrange(1, len(messages)), {"role": "system", "content": random_text(rng)})
    tools = None
    if rng.random() < 0.4:
        tools = rng.sample(TOOLS, rng.randint(1, len(TOOLS)))
    kwargs = {}
    if template == "qwen3":
        r = rng.random()
        if r < 0.33:
            kwargs["enable_thinking"] = False
        elif r < 0.66:
            kwargs["enable_thinking"] = True
    return messages, tools, rng.random() < 0.6, kwargs


def error_cases(template):
    """Conversations that make the template (or transformers around it) raise."""
    tc = {"type": "function", "function": {"name": "get_weather", "arguments": {"location": "Paris"}}}
    tc_str = {"type": "function", "function": {"name": "get_weather", "arguments": "{\"location\": \"Paris\"}"}}
    cases = [
        # content=None is dropped by apply_chat_template, so templates that use it see an undefined.
        ([{"role": "user", "content": "hi"}, {"role": "assistant", "content": None, "tool_calls": [tc_str]}], None, False, {}),
        ([{"role": "user", "content": None}], None, True, {}),
        # a multimodal content list where the template concatenates strings
        ([{"role": "user", "content": [{"type": "text", "text": "describe"}, {"type": "image", "url": "x.png"}]}], None, True, {}),
        # dict arguments where the template concatenates strings (deepseek)
        ([{"role": "user", "content": "hi"}, {"role": "assistant", "content": "", "tool_calls": [tc]}], None, False, {}),
        ([{"role": "user", "content": "hi"}, {"role": "assistant", "content": "ok", "tool_calls": [tc_str, tc]}], None, False, {}),
        # a message without a role
        ([{"content": "no role"}], None, True, {}),
        # only a system message
        ([{"role": "system", "content": "sys"}], None, True, {}),
        # reasoning under the older names (aliased to reasoning_content by transformers)
        ([{"role": "user", "content": "q"}, {"role": "assistant", "content": "a", "reasoning": "because"}], None, False, {}),
        ([{"role": "user", "content": "q"}, {"role": "assistant", "content": "a", "thinking": "hmm"}], None, True, {}),
        # extra keys and numbers in messages
        ([{"role": "user", "content": "q", "name": "bob", "weight": 1.5, "n": 3}], None, True, {}),
        ([{"role": "user", "content": 42}], None, True, {}),
    ]
    return cases


def render_real(name, count, seed):
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(os.path.join(SHARED, "tokenizers", name))
    rng = random.Random(seed)
    cases = [make_conversation(rng, name) for _ in range(count)] + error_cases(name)
    # continue_final_message: the prompt ends inside a trailing assistant message.
    for _ in range(24):
        messages, tools, _, kwargs = make_conversation(rng, name)
        messages = [m for m in messages if m["role"] != "tool" and not m.get("tool_calls")]
        messages.append({"role": "assistant", "content": rng.choice(["Sure, here", "The answer is", "  ", "你好", "x\n"])})
        cases.append((messages, tools, "continue", kwargs))
    lines = []
    n_err = 0
    for messages, tools, agp, kwargs in cases:
        rec = {"messages": messages}
        if tools is not None:
            rec["tools"] = tools
        cont = agp == "continue"
        if cont:
            agp = False
            rec["continue_final_message"] = True
        rec["add_generation_prompt"] = agp
        rec["kwargs"] = kwargs
        try:
            out = tok.apply_chat_template(
                json.loads(json.dumps(messages)),
                tools=tools,
                add_generation_prompt=agp,
                continue_final_message=cont,
                tokenize=False,
                **kwargs,
            )
            rec["expected"] = out
        except Exception as e:  # noqa: BLE001 - any failure is a fixture
            rec["error"] = str(e)
            rec["error_type"] = type(e).__name__
            n_err += 1
        lines.append(json.dumps(rec, ensure_ascii=False))
    path = os.path.join(OUT_DIR, name + ".jsonl")
    with open(path, "w", encoding="utf-8") as f:
        f.write("\n".join(lines) + "\n")
    print(f"{path}: {len(lines)} cases ({n_err} errors)")


# ------------------------------------------------------------------ feature templates

MSGS = [
    {"role": "system", "content": "You are helpful."},
    {"role": "user", "content": "Hi there"},
    {"role": "assistant", "content": "Hello! How can I help?"},
    {"role": "user", "content": "Tell me a joke"},
]

FEATURES = [
    # (name, template, context)
    ("text", "plain text", {}),
    ("var", "{{ x }}", {"x": "hello"}),
    ("var_int", "{{ x }} {{ y }} {{ z }}", {"x": 1, "y": -2, "z": 0}),
    ("var_float", "{{ a }} {{ b }} {{ c }} {{ d }} {{ e }}", {"a": 1.5, "b": 1.0, "c": 1e-05, "d": 1e16, "e": 123456789.123}),
    ("float_repr", "{{ 0.1 + 0.2 }} {{ 1e15 }} {{ 1e16 }} {{ 0.0001 }} {{ -0.0 }} {{ 1/3 }} {{ 2.5e-10 }} {{ 10/4 }}", {}),
    ("none_bool", "{{ none }} {{ true }} {{ false }} {{ None }} {{ True }}", {}),
    ("undefined_print", "[{{ missing }}][{{ missing|default('dflt') }}][{{ missing|d('x') }}]", {}),
    ("list_repr", "{{ [1, 'a', none, true, 2.5, [\"x\"], {'k': 'v'}] }}", {}),
    ("tuple_repr", "{{ (1, 2) }} {{ (1,) }} {{ () }}", {}),
    ("dict_repr", "{{ {'a': 1, 'b': [1, 2], 3: none} }}", {}),
    ("str_repr_quotes", "{{ [\"it's\", 'say \"hi\"', 'both \\' and \"', 'back\\\\slash', 'nl\\n tab\\t'] }}", {}),
    ("str_repr_unicode", "{{ [x] }}", {"x": "é中😀\u200b\u00a0\x01\x7f\u2028"}),
    ("json_ctx_repr", "{{ m }}", {"m": {"role": "user", "content": "hi", "n": [1, 2.0, None, True]}}),
    ("concat_tilde", "{{ 'a' ~ 1 ~ none ~ true ~ missing ~ 2.0 }}", {}),
    ("arith", "{{ 7 + 3 }} {{ 7 - 10 }} {{ 7 * 3 }} {{ 7 / 2 }} {{ 7 // 2 }} {{ -7 // 2 }} {{ 7 % 3 }} {{ -7 % 3 }} {{ 2 ** 10 }} {{ 2 ** -1 }}", {}),
    ("arith_float", "{{ 7.5 // 2 }} {{ -7.5 % 2 }} {{ 1.5 * 2 }} {{ 3 + 0.5 }} {{ true + 1 }}", {}),
    ("str_ops", "{{ 'ab' * 3 }} {{ 3 * 'x' }} {{ 'a' + 'b' }} {{ [1] + [2, 3] }} {{ [0] * 3 }}", {}),
    ("compare", "{{ 1 < 2 }} {{ 2 <= 1 }} {{ 'a' < 'b' }} {{ 1 == 1.0 }} {{ 1 != 2 }} {{ [1, 2] == [1, 2] }} {{ 1 < 2 < 3 }} {{ 3 > 2 > 2 }}", {}),
    ("logic", "{{ 0 or 'x' }} {{ 1 and 'y' }} {{ '' and 'z' }} {{ not 0 }} {{ none or [] }} {{ 'a' if 0 else 'b' }}", {}),
    ("in_ops", "{{ 'a' in 'cat' }} {{ 2 in [1, 2] }} {{ 'k' in {'k': 1} }} {{ 3 not in [1, 2] }} {{ 'x' in missing }}", {}),
    ("cond_no_else", "[{{ 'yes' if false }}]", {}),
    ("precedence", "{{ 1 + 2 * 3 }} {{ (1 + 2) * 3 }} {{ -2 ** 2 }} {{ 2 ** 3 ** 2 }} {{ not 1 == 2 }} {{ 10 - 2 - 3 }}", {}),
    ("filter_binds_unary", "{{ -3|abs }} {{ - 3|abs }} {{ 'a' ~ 'b'|upper }}", {}),
    ("if_elif_else", "{% for x in [1, 2, 3, 4] %}{% if x == 1 %}one{% elif x == 2 %}two{% elif x == 3 %}three{% else %}other{% endif %},{% endfor %}", {}),
    ("for_loop_vars", "{% for x in 'abc' %}{{ loop.index }}{{ loop.index0 }}{{ loop.revindex }}{{ loop.revindex0 }}{{ loop.first }}{{ loop.last }}{{ loop.length }};{% endfor %}", {}),
    ("for_prev_next", "{% for x in [1, 2, 3] %}{{ loop.previtem }}|{{ loop.nextitem }};{% endfor %}", {}),
    ("for_else", "{% for x in [] %}{{ x }}{% else %}empty{% endfor %}{% for x in [1] %}{{ x }}{% else %}no{% endfor %}", {}),
    ("for_filter", "{% for x in range(10) if x is odd %}{{ x }}{{ ',' if not loop.last }}{% endfor %}", {}),
    ("for_unpack", "{% for k, v in d.items() %}{{ k }}={{ v }};{% endfor %}", {"d": {"a": 1, "b": [2]}}),
    ("for_dict", "{% for k in d %}{{ k }}{% endfor %}", {"d": {"x": 1, "y": 2}}),
    ("for_string", "{% for c in 'héllo' %}[{{ c }}]{% endfor %}", {}),
    ("for_nested_loop", "{% for a in [1, 2] %}{% for b in 'xy' %}{{ loop.index }}{{ b }}{% endfor %}{{ loop.index }};{% endfor %}", {}),
    ("for_break_continue", "{% for i in range(10) %}{% if i == 2 %}{% continue %}{% endif %}{% if i == 5 %}{% break %}{% endif %}{{ i }}{% endfor %}", {}),
    ("loop_cycle", "{% for i in range(5) %}{{ loop.cycle('a', 'b', 'c') }}{% endfor %}", {}),
    ("loop_changed", "{% for i in [1, 1, 2, 2, 3] %}{% if loop.changed(i) %}{{ i }}{% endif %}{% endfor %}", {}),
    ("loop_recursive", "{% for n in tree recursive %}{{ n.name }}{% if n.children %}({{ loop(n.children) }}){% endif %}{% endfor %}",
     {"tree": [{"name": "a", "children": [{"name": "b", "children": []}, {"name": "c"}]}, {"name": "d"}]}),
    ("loop_depth", "{% for n in tree recursive %}{{ loop.depth }}{{ loop.depth0 }}{% if n.c %}{{ loop(n.c) }}{% endif %}{% endfor %}",
     {"tree": [{"c": [{"c": [{}]}]}]}),
    ("set_scope_loop", "{% set x = 1 %}{% for i in range(3) %}{{ x }}{% set x = i + 5 %}{{ x }};{% endfor %}{{ x }}", {}),
    ("set_scope_if", "{% if true %}{% set z = 3 %}{% endif %}{{ z }}", {}),
    ("set_tuple", "{% set a, b = 1, 2 %}{{ a }}{{ b }}{% set c = 1, 2 %}{{ c }}", {}),
    ("set_block", "{% set body %}Hello {{ name }}!{% endset %}[{{ body }}]", {"name": "Ann"}),
    ("set_block_filter", "{% set body | upper | trim %}  hello {{ name }}  {% endset %}[{{ body }}]", {"name": "bob"}),
    ("namespace", "{% set ns = namespace(count=0, items=[]) %}{% for i in range(4) %}{% set ns.count = ns.count + i %}{% endfor %}{{ ns.count }}", {}),
    ("namespace_dict_arg", "{% set ns = namespace({'a': 1}, b=2) %}{{ ns.a }}{{ ns.b }}{{ ns.c }}", {}),
    ("namespace_repr", "{% set ns = namespace(a=1) %}{{ ns }}", {}),
    ("namespace_underscore", "{% set ns = namespace() %}{% set ns._x = 1 %}", {}),
    ("namespace_ctor_underscore", "{% set ns = namespace(_x=1) %}", {}),
    ("macro_basic", "{% macro greet(name, greeting='Hello') %}{{ greeting }}, {{ name }}!{% endmacro %}{{ greet('Ann') }} {{ greet('Bob', 'Hi') }} {{ greet(greeting='Yo', name='Cy') }}", {}),
    ("macro_missing_arg", "{% macro f(a, b) %}[{{ a }}][{{ b }}]{% endmacro %}{{ f(1) }}", {}),
    ("macro_varargs_kwargs", "{% macro f(a) %}{{ a }}{{ varargs }}{{ kwargs }}{% endmacro %}{{ f(1, 2, 3, x=4) }}", {}),
    ("macro_too_many", "{% macro f(a) %}{{ a }}{% endmacro %}{{ f(1, 2) }}", {}),
    ("macro_bad_kwarg", "{% macro f(a) %}{{ a }}{% endmacro %}{{ f(b=2) }}", {}),
    ("macro_scope", "{% set x = 1 %}{% macro m() %}{{ x }}{% endmacro %}{% set x = 2 %}{{ m() }}", {}),
    ("macro_scope_loop", "{% macro m() %}[{{ x }}]{% endmacro %}{% for x in [7] %}{{ m() }}{% endfor %}", {}),
    ("macro_in_loop", "{% for x in [7, 8] %}{% macro m() %}{{ x }}{% endmacro %}{{ m() }}{% endfor %}", {}),
    ("macro_recursion", "{% macro fact(n) %}{% if n <= 1 %}1{% else %}{{ n * (fact(n - 1)|int) }}{% endif %}{% endmacro %}{{ fact(10) }}", {}),
    ("macro_default_refs_arg", "{% macro f(a, b=a * 2) %}{{ a }},{{ b }}{% endmacro %}{{ f(3) }}", {}),
    ("macro_repr", "{% macro foo() %}{% endmacro %}{{ foo }}", {}),
    ("call_block", "{% macro wrap(tag) %}<{{ tag }}>{{ caller() }}</{{ tag }}>{% endmacro %}{% call wrap('b') %}bold {{ 1 + 1 }}{% endcall %}", {}),
    ("call_block_args", "{% macro each(items) %}{% for i in items %}{{ caller(i) }}{% endfor %}{% endmacro %}{% call(x) each([1, 2]) %}<{{ x }}>{% endcall %}", {}),
    ("filter_block", "{% filter upper %}hello {{ 'world' }}{% endfilter %}", {}),
    ("with_block", "{% with a = 1, b = 'x' %}{{ a }}{{ b }}{% endwith %}[{{ a }}]", {}),
    ("raw_block", "{% raw %}{{ not rendered }} {% if %}{% endraw %}", {}),
    ("comment", "a{# comment #}b{#- stripped -#} c", {}),
    ("generation_block", "{% generation %}gen {{ 1 }}{% endgeneration %}", {}),
    ("ws_trim_blocks", "{% if true %}\nline\n{% endif %}\nafter\n", {}),
    ("ws_lstrip_blocks", "start\n    {% if true %}\n    indented\n    {% endif %}\nend", {}),
    ("ws_minus", "a   {{- 'b' -}}   c\n  {%- if true -%}  d  {%- endif -%}  \n e", {}),
    ("ws_plus", "start\n    {%+ if true %}\nx\n    {%+ endif +%}\nend", {}),
    ("ws_var_not_lstripped", "a\n    {{ 'x' }}\n    {% if true %}y{% endif %}\n", {}),
    ("ws_comment_lstrip", "a\n   {# c #}\nb", {}),
    ("ws_crlf", "a\r\n{% if true %}\r\nb\r\n{% endif %}\r\nc\r\n", {}),
    ("ws_trailing_newline", "text\n", {}),
    ("ws_two_trailing_newlines", "text\n\n", {}),
    ("ws_unicode_lstrip", "a\n\u3000 {% if true %}b{% endif %}", {}),
    ("ws_inline_block", "x {% if true %} y {% endif %} z", {}),
    ("string_escapes", "{{ 'tab\\there' }}|{{ \"q\\\"uote\" }}|{{ 'nl\\nx' }}|{{ '\\u00e9\\x41\\101' }}|{{ 'keep\\d' }}", {}),
    ("string_adjacent", "{{ 'a' 'b' \"c\" }}", {}),
    ("int_literals", "{{ 0x1F }} {{ 0o17 }} {{ 0b101 }} {{ 1_000_000 }} {{ 1.5e3 }} {{ 2E-3 }}", {}),
    ("getattr_getitem", "{{ d.a }} {{ d['a'] }} {{ d.b.c }} {{ d['b']['c'] }} {{ l[0] }} {{ l[-1] }} {{ l.1 }}", {"d": {"a": 1, "b": {"c": 2}}, "l": [5, 6, 7]}),
    ("getattr_missing", "[{{ d.x }}][{{ l[10] }}][{{ none.x }}][{{ 'abc'.x }}]", {"d": {}, "l": []}),
    ("getattr_undefined_chain", "{{ d.x.y }}", {"d": {}}),
    ("undefined_name_attr", "{{ nope.y }}", {}),
    ("dict_method_shadow", "{{ d['items'] }} {{ d.get('items') }}", {"d": {"items": 5}}),
    ("dict_methods", "{{ d.get('a') }} {{ d.get('z') }} {{ d.get('z', 9) }} {{ d.keys()|list }} {{ d.values()|list }} {{ d.items()|list }}", {"d": {"a": 1, "b": 2}}),
    ("slicing", "{{ l[1:] }} {{ l[:-1] }} {{ l[::-1] }} {{ l[::2] }} {{ l[1:3] }} {{ s[1:-1] }} {{ s[::-1] }} {{ s[-3:] }} {{ l[5:] }}", {"l": [1, 2, 3, 4], "s": "héllo😀"}),
    ("string_index", "{{ s[0] }} {{ s[-1] }} {{ s|length }}", {"s": "😀ab中"}),
    ("str_methods_case", "{{ s.upper() }} {{ s.lower() }} {{ s.title() }} {{ s.capitalize() }} {{ s.swapcase() }}", {"s": "hello wORLD they're ÉTÉ"}),
    ("str_methods_strip", "[{{ s.strip() }}][{{ s.lstrip() }}][{{ s.rstrip() }}][{{ 'xxhixx'.strip('x') }}][{{ '\\n\\na\\n'.strip('\\n') }}]", {"s": " \t hi \u3000\n"}),
    ("str_methods_split", "{{ s.split() }} {{ s.split(',') }} {{ s.split(',', 1) }} {{ s.rsplit(',', 1) }} {{ '  a  b  '.split() }} {{ 'a b c'.split(none, 1) }}", {"s": "a,b,,c"}),
    ("str_methods_find", "{{ s.find('l') }} {{ s.rfind('l') }} {{ s.find('z') }} {{ s.count('l') }} {{ s.index('o') }} {{ s.startswith('hé') }} {{ s.endswith(('x', 'lo')) }}", {"s": "héllo"}),
    ("str_methods_replace", "{{ s.replace('l', 'L') }} {{ s.replace('l', 'L', 1) }} {{ 'ab'.replace('', '-') }}", {"s": "hello"}),
    ("str_methods_misc", "{{ ','.join(['a', 'b']) }} {{ 'ab'.center(6, '*') }} {{ 'ab'.ljust(4) }}| {{ '5'.zfill(3) }} {{ 'a=b=c'.partition('=') }} {{ 'x'.isalpha() }} {{ '12'.isdigit() }} {{ ' '.isspace() }}", {}),
    ("str_splitlines", "{{ 'a\\nb\\r\\nc\\n'.splitlines() }}", {}),
    ("str_format_method", "{{ '{} and {}'.format('a', 1) }} {{ '{0}{1}{0}'.format('x', 'y') }} {{ '{name}!'.format(name='Z') }} {{ '{:>5}|{:<4}|{:^7}'.format('r', 'l', 'c') }} {{ '{:.2f} {:05d} {:,}'.format(3.14159, 42, 1234567) }}", {}),
    ("percent_format", "{{ '%s is %d years' % ('Ann', 30) }} {{ '%.2f' % 3.14159 }} {{ '%5s|%-5s|' % ('a', 'b') }} {{ '%(x)s' % {'x': 1} }} {{ '%x %o %e' % (255, 8, 12345.678) }}", {}),
    ("filter_format", "{{ '%s-%s'|format('a', 'b') }}", {}),
    ("filter_trim", "[{{ '  x  '|trim }}][{{ 'xxyxx'|trim('x') }}][{{ missing|trim }}]", {}),
    ("filter_case", "{{ 'hello world'|upper }} {{ 'HeLLo'|lower }} {{ 'hello world-foo(bar)'|title }} {{ 'hELLO'|capitalize }}", {}),
    ("filter_length", "{{ [1, 2]|length }} {{ 'héllo'|length }} {{ {'a': 1}|count }} {{ missing|length }}", {}),
    ("filter_first_last", "{{ [1, 2, 3]|first }} {{ [1, 2, 3]|last }} {{ 'abc'|first }} [{{ []|first }}]", {}),
    ("filter_join", "{{ [1, 2, 3]|join(', ') }} {{ ['a', 'b']|join }} {{ users|join(', ', attribute='name') }}", {"users": [{"name": "a"}, {"name": "b"}]}),
    ("filter_list", "{{ 'abc'|list }} {{ {'a': 1}|list }} {{ (1, 2)|list }}", {}),
    ("filter_replace", "{{ 'aaa'|replace('a', 'b') }} {{ 'aaa'|replace('a', 'b', 2) }}", {}),
    ("filter_default_boolean", "[{{ ''|default('x') }}][{{ ''|default('x', true) }}][{{ none|default('n') }}][{{ 0|d(5, true) }}]", {}),
    ("filter_items", "{% for k, v in d|items %}{{ k }}{{ v }}{% endfor %}", {"d": {"a": 1, "b": 2}}),
    ("filter_string", "{{ 1|string }} {{ [1]|string }} {{ none|string }} {{ 1.0|string ~ 'x' }}", {}),
    ("filter_int_float", "{{ '42'|int }} {{ '4.7'|int }} {{ 'x'|int }} {{ 'x'|int(7) }} {{ 3.9|int }} {{ '0x1A'|int(0, 16) }} {{ '3.5'|float }} {{ 'x'|float }} {{ 2|float }}", {}),
    ("filter_abs_round", "{{ -5|abs }} {{ (-2.5)|abs }} {{ 2.5|round }} {{ 3.5|round }} {{ 2.675|round(2) }} {{ 2.1|round(0, 'ceil') }} {{ 2.9|round(0, 'floor') }} {{ 7|round }}", {}),
    ("filter_map", "{{ users|map(attribute='name')|list }} {{ ['a', 'b']|map('upper')|list }} {{ users|map(attribute='age', default=0)|list }}", {"users": [{"name": "x", "age": 3}, {"name": "y"}]}),
    ("filter_select_reject", "{{ [1, 2, 3, 4]|select('odd')|list }} {{ [1, 2, 3, 4]|reject('odd')|list }} {{ [0, 1, '', 'a']|select|list }} {{ [1, 5, 10]|select('gt', 3)|list }}", {}),
    ("filter_selectattr", "{{ msgs|selectattr('role', 'equalto', 'user')|map(attribute='content')|list }} {{ msgs|rejectattr('role', 'eq', 'user')|list|length }} {{ msgs|selectattr('tool')|list }}", {"msgs": [{"role": "user", "content": "a"}, {"role": "assistant", "content": "b", "tool": 1}]}),
    ("generator_truthy", "{% if []|select('odd') %}truthy{% endif %}|{% if []|select('odd')|list %}list-truthy{% endif %}", {}),
    ("filter_unique", "{{ [1, 2, 1, 3, 2]|unique|list }} {{ ['a', 'A', 'b']|unique|list }} {{ ['a', 'A']|unique(case_sensitive=true)|list }}", {}),
    ("filter_sort", "{{ [3, 1, 2]|sort }} {{ [3, 1, 2]|sort(reverse=true) }} {{ ['b', 'A', 'c']|sort }} {{ ['b', 'A', 'c']|sort(case_sensitive=true) }} {{ users|sort(attribute='age')|map(attribute='n')|list }}", {"users": [{"n": "a", "age": 3}, {"n": "b", "age": 1}, {"n": "c", "age": 2}]}),
    ("filter_reverse", "{{ 'abc'|reverse }} {{ [1, 2, 3]|reverse|list }}", {}),
    ("filter_dictsort", "{{ d|dictsort }} {{ d|dictsort(reverse=true) }} {{ d|dictsort(by='value') }}", {"d": {"b": 1, "a": 3, "C": 2}}),
    ("filter_min_max_sum", "{{ [3, 1, 2]|min }} {{ [3, 1, 2]|max }} {{ [1, 2, 3]|sum }} {{ users|sum(attribute='a') }} {{ ['b', 'A']|max }}", {"users": [{"a": 1}, {"a": 2}]}),
    ("filter_indent", "{{ 'a\\nb\\n\\nc'|indent }}|{{ 'a\\nb'|indent(2, true) }}|{{ 'a\\n\\nb'|indent(width='> ', blank=true) }}", {}),
    ("filter_wordcount", "{{ 'hello big world, it\\'s 2024'|wordcount }} {{ '你好 世界'|wordcount }}", {}),
    ("filter_center_truncate", "[{{ 'ab'|center(7) }}] {{ 'hello world foo bar'|truncate(11) }} {{ 'hello world'|truncate(5, true) }}", {}),
    ("filter_batch_slice", "{{ [1, 2, 3, 4, 5]|batch(2)|list }} {{ [1, 2, 3, 4, 5]|batch(2, 0)|list }} {{ [1, 2, 3, 4, 5]|slice(2)|list }}", {}),
    ("filter_escape_striptags", "{{ '<a href=\"x\">&</a>'|e }} {{ '<b>bold</b>  text &amp; more'|striptags }}", {}),
    ("filter_attr", "{{ d|attr('a') }}", {"d": {"a": 5}}),
    ("filter_groupby", "{% for g, items in people|groupby('city') %}{{ g }}:{{ items|map(attribute='n')|join(',') }};{% endfor %}", {"people": [{"n": "a", "city": "X"}, {"n": "b", "city": "Y"}, {"n": "c", "city": "X"}]}),
    ("tojson_basic", "{{ d|tojson }}", {"d": {"a": [1, 2.5, None, True, "é\"\\\n\u2028😀\x01"], "b": {}, "c": []}}),
    ("tojson_indent", "{{ d|tojson(indent=2) }}", {"d": {"a": [1, {"b": None}], "e": [], "f": {}}}),
    ("tojson_options", "{{ d|tojson(sort_keys=true) }} {{ d|tojson(separators=(',', ':')) }} {{ d|tojson(ensure_ascii=true) }}", {"d": {"z": "é😀", "a": 1}}),
    ("tojson_scalars", "{{ 'x'|tojson }} {{ 1|tojson }} {{ 1.0|tojson }} {{ none|tojson }} {{ (1, 2)|tojson }} {{ 1e100|tojson }}", {}),
    ("tojson_undefined", "{{ missing|tojson }}", {}),
    ("tojson_tools", "{% for t in tools %}{{ t|tojson }}\n{% endfor %}", {"tools": TOOLS[:2]}),
    ("tests_types", "{{ 1 is number }} {{ 1.5 is float }} {{ 1 is integer }} {{ true is boolean }} {{ 'a' is string }} {{ {} is mapping }} {{ [] is sequence }} {{ 'a' is iterable }} {{ 5 is iterable }} {{ none is none }}", {}),
    ("tests_defined", "{{ x is defined }} {{ y is defined }} {{ y is undefined }} {{ x is not none }} {{ x.z is defined }}", {"x": {}}),
    ("tests_values", "{{ true is true }} {{ 1 is true }} {{ false is false }} {{ 3 is odd }} {{ 4 is even }} {{ 9 is divisibleby 3 }} {{ 9 is divisibleby(4) }}", {}),
    ("tests_compare", "{{ 1 is eq 1 }} {{ 1 is ne 2 }} {{ 2 is gt 1 }} {{ 2 is ge 2 }} {{ 1 is lt 2 }} {{ 1 is le 0 }} {{ 'a' is in 'abc' }} {{ 2 is in [1] }} {{ 1 is equalto 1 }} {{ 1 is sameas 1 }} {{ none is sameas none }}", {}),
    ("tests_case", "{{ 'abc' is lower }} {{ 'ABC' is upper }} {{ 'aBc' is lower }} {{ '123' is lower }}", {}),
    ("tests_callable", "{{ range is callable }} {{ 1 is callable }} {{ 'upper' is filter }} {{ 'odd' is test }} {{ 'nope' is filter }}", {}),
    ("range_global", "{{ range(3)|list }} {{ range(1, 10, 3)|list }} {{ range(5, 0, -2)|list }} {{ range(0)|list }}", {}),
    ("range_too_big", "{{ range(1000000)|length }}", {}),
    ("dict_global", "{{ dict(a=1, b=2) }} {{ dict([('x', 1)]) }}", {}),
    ("raise_exception", "{% if messages|length > 1 %}{{ raise_exception('Only one message allowed! (got ' ~ messages|length ~ ')') }}{% endif %}", {"messages": MSGS}),
    ("raise_exception_line", "line1\nline2\n{{ raise_exception('on line 3') }}", {}),
    ("joiner", "{% set pipe = joiner(' | ') %}{% for i in range(3) %}{{ pipe() }}{{ i }}{% endfor %}", {}),
    ("list_append_unsafe", "{% set l = [] %}{{ l.append(1) }}", {}),
    ("dict_update_unsafe", "{% set d = {} %}{{ d.update({'a': 1}) }}", {}),
    ("unsafe_print", "[{{ [].append }}]", {}),
    ("err_unknown_filter", "line1\n{{ x|nosuchfilter }}", {"x": 1}),
    ("err_unknown_filter_in_if", "{% if false %}{{ x|nosuchfilter }}{% endif %}ok", {}),
    ("err_unknown_filter_in_if_run", "{% if true %}\n{{ x|nosuchfilter }}{% endif %}ok", {"x": 1}),
    ("err_unknown_test", "{{ x is nosuchtest }}", {"x": 1}),
    ("err_unknown_tag", "a\n{% frobnicate %}", {}),
    ("err_unclosed_if", "{% if true %}\nabc", {}),
    ("err_unclosed_for_in_if", "{% if true %}{% for x in y %}\n{% endif %}", {}),
    ("err_endfor_toplevel", "x\n\n{% endfor %}", {}),
    ("err_bad_expression", "{{ 1 + }}", {}),
    ("err_unclosed_var", "hello {{ name", {}),
    ("err_unclosed_string", "{{ 'abc }}", {}),
    ("err_unexpected_char", "{{ 1 $ 2 }}", {}),
    ("err_unbalanced", "{{ (1 + 2 }}", {}),
    ("err_unclosed_comment", "a {# never closed", {}),
    ("err_break_outside_loop", "{% break %}", {}),
    ("err_type_concat", "{{ 'a' + 1 }}", {}),
    ("err_type_add", "{{ 1 + 'a' }}", {}),
    ("err_undefined_add", "\n{{ 'a' + missing }}", {}),
    ("err_none_add", "{{ none + 1 }}", {}),
    ("err_div_zero", "{{ 1 / 0 }}", {}),
    ("err_mod_zero", "{{ 1 % 0 }}", {}),
    ("err_not_callable", "{{ 'abc'() }}", {}),
    ("err_call_undefined", "{{ foo() }}", {}),
    ("err_compare_types", "{{ 1 < 'a' }}", {}),
    ("err_not_iterable", "{% for x in 5 %}{% endfor %}", {}),
    ("err_unpack", "{% for a, b in [[1, 2, 3]] %}{% endfor %}", {}),
    ("err_assign_const", "{% set true = 1 %}", {}),
    ("err_ns_assign", "{% set x = 1 %}{% set x.y = 2 %}", {}),
    ("err_length_int", "{{ 5|length }}", {}),
    ("err_items_list", "{{ [1]|items|list }}", {}),
    ("err_slice_step_zero", "{{ [1, 2][::0] }}", {}),
    ("err_str_join_int", "{{ ', '.join([1, 2]) }}", {}),
    ("err_index_not_found", "{{ 'abc'.index('z') }}", {}),
    ("err_macro_recursion", "{% macro f(n) %}{{ f(n + 1) }}{% endmacro %}{{ f(0) }}", {}),
    ("messages_loop", "{% for m in messages %}<|{{ m.role }}|>{{ m.content }}{% if not loop.last %}\n{% endif %}{% endfor %}{% if add_generation_prompt %}<|assistant|>{% endif %}", {"messages": MSGS, "add_generation_prompt": True}),
    ("messages_last_user", "{% set ns = namespace(idx=-1) %}{% for m in messages %}{% if m.role == 'user' %}{% set ns.idx = loop.index0 %}{% endif %}{% endfor %}{{ ns.idx }}", {"messages": MSGS}),
    ("messages_reverse_slice", "{% for m in messages[::-1] %}{{ m.role[0] }}{% endfor %}", {"messages": MSGS}),
    ("system_first", "{% if messages[0]['role'] == 'system' %}{% set sys = messages[0]['content'] %}{% set rest = messages[1:] %}{% else %}{% set sys = '' %}{% set rest = messages %}{% endif %}[{{ sys }}]{{ rest|length }}", {"messages": MSGS}),
    ("content_list_parts", "{% for m in messages %}{% if m.content is string %}{{ m.content }}{% else %}{% for p in m.content %}{% if p.type == 'text' %}{{ p.text }}{% else %}<{{ p.type }}>{% endif %}{% endfor %}{% endif %}{% endfor %}", {"messages": [{"role": "user", "content": [{"type": "text", "text": "hi "}, {"type": "image"}]}, {"role": "assistant", "content": "yo"}]}),
    ("tool_call_args", "{% for tc in calls %}{{ tc.function.name }}({{ tc.function.arguments|tojson if tc.function.arguments is mapping else tc.function.arguments }});{% endfor %}", {"calls": [{"function": {"name": "f", "arguments": {"a": 1, "b": "é"}}}, {"function": {"name": "g", "arguments": "{\"x\": 2}"}}]}),
    ("bos_eos", "{{ bos_token }}x{{ eos_token }}", {"bos_token": "<s>", "eos_token": "</s>"}),
    ("strftime_type", "{{ strftime_now('%Y') is string }}", {}),
    ("deep_nesting_parens", "{{ ((((((((((1)))))))))) + ((((2)))) }}", {}),
    ("long_output_loop", "{% for i in range(200) %}{{ i }},{% endfor %}", {}),
    ("print_stmt", "{% print 'via print' %}", {}),
    ("block_tag", "a{% block content %}b{% endblock %}c", {}),
    ("autoescape_tag", "{% autoescape false %}<{{ '<' }}>{% endautoescape %}", {}),
    ("nested_macros_caller", "{% macro outer() %}[{{ caller() }}]{% endmacro %}{% macro inner() %}{% call outer() %}in{% endcall %}{% endmacro %}{{ inner() }}", {}),
    ("unicode_names", "{% set café = 'ok' %}{{ café }}", {}),
    ("dict_literal_order", "{% set d = {'z': 1, 'a': 2, 'm': 3} %}{% for k in d %}{{ k }}{% endfor %}{{ d|tojson }}", {}),
    ("list_in_list", "{{ [1, 2] in [[1, 2], [3]] }} {{ (1, 2) == [1, 2] }}", {}),
    ("bool_int_equal", "{{ true == 1 }} {{ false == 0 }} {{ 1.0 in [1] }}", {}),
    # --- edge cases ---
    ("undefined_filters", "[{{ missing|upper }}][{{ missing|list }}][{{ missing|join(',') }}][{{ missing|string }}][{{ missing|length }}][{{ missing is iterable }}]", {}),
    ("loop_length_filtered", "{% for x in range(10) if x > 6 %}{{ loop.index }}/{{ loop.length }} {% endfor %}", {}),
    ("macro_set_scope", "{% set x = 'outer' %}{% macro m() %}{% set x = 'inner' %}{{ x }}{% endmacro %}{{ m() }} {{ x }}", {}),
    ("not_in_precedence", "{{ not 'a' in 'abc' }} {{ not ('a' in 'xyz') }} {{ 1 + 2 in [3] }}", {}),
    ("negative_index_msg", "{{ messages[-1]['role'] }} {{ messages[-1].content|length }}", {"messages": MSGS}),
    ("divisibleby_zero", "{{ 4 is divisibleby 0 }}", {}),
    ("abs_int_float", "{{ -0.0|abs }} {{ 1.5|int }} {{ -1.5|int }} {{ '  7 '|int }} {{ '1_000'|int }} {{ '1e3'|float }}", {}),
    ("round_negative", "{{ 1234|round(-2) }} {{ 1250.0|round(-2) }} {{ 0.5|round }} {{ 1.5|round }} {{ -2.5|round }}", {}),
    ("tuple_plus_list", "{{ (1,) + [2] }}", {}),
    ("cond_expr_chain", "{{ 'a' if x == 1 else 'b' if x == 2 else 'c' }}{{ 'x' if none else 'y' }}", {"x": 2}),
    ("string_truthiness", "{{ '0' and 'y' }} {{ '' or 'empty' }} {{ [] or {} or 'z' }}", {}),
    ("map_tojson", "{{ [{'a': 1}, [2]]|map('tojson')|join(' ') }}", {}),
    ("in_generator", "{{ 2 in [1, 2, 3]|select('odd') }} {{ 3 in [1, 2, 3]|select('odd') }}", {}),
    ("escapes_in_data", "a\\nb {{ 'c\\\\d' }} \\{{ '{{' }}", {}),
    ("lstrip_comment_then_block", "x\n  {# c #}  {% if true %}y{% endif %}\nz", {}),
    ("lstrip_minus_plus_mix", "a\n  {%- if true +%}\n  b\n  {%+ endif -%}\n  c", {}),
    ("trim_after_comment", "a{# c #}\nb{#- d -#}\n c", {}),
    ("trim_var_newline", "{{ 'x' }}\n{{ 'y' }}\n", {}),
    ("raw_with_ws", "a\n  {% raw %}\n  {{ x }}\n  {% endraw %}\nb", {}),
    ("raw_minus", "a  {%- raw -%}  b  {%- endraw -%}  c", {}),
    ("set_then_loop_var", "{% set messages = messages[1:] %}{% for m in messages %}{{ m.role }} {% endfor %}", {"messages": MSGS}),
    ("nested_ns_in_macro", "{% set ns = namespace(n=0) %}{% macro inc() %}{% set ns.n = ns.n + 1 %}{% endmacro %}{{ inc() }}{{ inc() }}{{ ns.n }}", {}),
    ("dict_get_nested", "{{ d.get('a', {}).get('b', 'none') }} {{ d.get('x', {}).get('b', 'none') }}", {"d": {"a": {"b": 1}}}),
    ("items_sorted_keys", "{% for k, v in d|dictsort %}{{ k }}:{{ v }},{% endfor %}", {"d": {"b": 2, "a": 1, "c": None}}),
    ("tojson_nested_unicode", "{{ d|tojson }}", {"d": {"name": "工具", "desc": "emoji 🎉 \u2028 \u0000 tab\t", "n": -0.0, "big": 12345678901234567890.0}}),
    ("tojson_indent_str", "{{ [1, {'a': 2}]|tojson(indent='\\t') }}", {}),
    ("tojson_float_forms", "{{ [1.0, 1e-7, 1e22, 0.1, -2.5, 100.0, 3.0e5]|tojson }}", {}),
    ("json_dict_int_keys", "{{ {1: 'a', true: 'b', none: 'c', 2.5: 'd'}|tojson }}", {}),
    ("print_dict_int_keys", "{{ {1: 'a', 2.5: none} }} {{ {(1, 2): 'tuple key'} }}", {}),
    ("string_startswith_tuple", "{{ 'hello'.startswith(('x', 'he')) }} {{ 'hello'.endswith('lo', 0, 4) }} {{ 'hello'.startswith('l', 2) }}", {}),
    ("split_maxsplit_ws", "{{ '  a  b  c  '.split(none, 1) }} {{ '  a  b  c  '.rsplit(none, 1) }} {{ 'a,b,c'.rsplit(',') }}", {}),
    ("str_count_find_unicode", "{{ 'ééé'.count('é') }} {{ 'aéb'.find('b') }} {{ 'héllo wörld'.rfind('ö') }} {{ 'abc'.find('') }}", {}),
    ("lower_upper_tests_unicode", "{{ 'éa' is lower }} {{ 'ÉA' is upper }} {{ '中' is lower }}", {}),
    ("title_filter_vs_method", "{{ \"they're bill's friends\"|title }} {{ \"they're bill's friends\".title() }}", {}),
    ("capitalize_unicode", "{{ 'éCOLE'|capitalize }} {{ 'ñANDÚ'.capitalize() }}", {}),
    ("wordcount_unicode", "{{ 'naïve café — 日本語 text_with_underscore 42'|wordcount }}", {}),
    ("join_nested", "{{ [[1, 2], 'a', none]|join('|') }}", {}),
    ("list_repr_floats", "{{ [1.0, 0.1, 1e-5, 1e16, -0.0, 2.5e-300] }}", {}),
    ("int_float_compare", "{{ 1 == 1.0 }} {{ 2 > 1.5 }} {{ true > 0 }} {{ 0.1 + 0.2 == 0.3 }}", {}),
    ("loop_in_macro_caller", "{% macro list(items) %}{% for i in items %}{{ caller(i, loop.index) }}{% endfor %}{% endmacro %}{% call(x, n) list(['a', 'b']) %}{{ n }}{{ x }};{% endcall %}", {}),
    ("macro_kwargs_only", "{% macro f() %}{{ kwargs|dictsort }}{% endmacro %}{{ f(b=1, a=2) }}", {}),
    ("varargs_loop", "{% macro f() %}{% for a in varargs %}{{ a }}{% endfor %}{% endmacro %}{{ f(1, 2, 3) }}", {}),
    ("filter_block_nested", "{% filter trim %}{% filter upper %}  abc  {% endfilter %}{% endfilter %}|", {}),
    ("set_block_in_loop", "{% for i in range(2) %}{% set s %}<{{ i }}>{% endset %}{{ s }}{% endfor %}[{{ s }}]", {}),
    ("with_shadowing", "{% set a = 1 %}{% with a = a + 1 %}{{ a }}{% set a = 10 %}{{ a }}{% endwith %}{{ a }}", {}),
    ("empty_template", "", {}),
    ("only_comment", "{# nothing #}", {}),
    ("whitespace_only_lines", "{% for i in range(2) %}\n    \n    {{ i }}\n{% endfor %}", {}),
    ("err_unexpected_endif", "{% if true %}{% endfor %}", {}),
    ("err_else_twice", "{% if true %}{% else %}{% else %}{% endif %}", {}),
    ("err_missing_in", "{% for x y %}{% endfor %}", {}),
    ("err_call_macro_undefined_attr", "{{ messages[0].nope.deeper }}", {"messages": MSGS}),
    ("err_getitem_on_undefined", "{{ missing[0] }}", {}),
    ("err_filter_undefined_int", "{{ missing|int }}", {}),
    ("err_sort_mixed", "{{ [1, 'a']|sort }}", {}),
    ("err_tojson_namespace", "{{ namespace(a=1)|tojson }}", {}),
    ("err_json_key_tuple", "{{ {(1, 2): 1}|tojson }}", {}),
    ("err_unhashable_key", "{{ {[1]: 2} }}", {}),
    ("err_dict_unknown_method_call", "{{ {}.nope() }}", {}),
    ("err_string_method_args", "{{ 'a'.split(1) }}", {}),
    ("err_neg_str", "{{ -'a' }}", {}),
    ("err_format_args", "{{ '%d' % 'x' }}", {}),
    ("err_not_enough_format_args", "{{ '%s %s' % ('a',) }}", {}),
    ("err_too_many_format_args", "{{ '%s' % ('a', 'b') }}", {}),
    ("string_multiline_template", "{%- for m in messages -%}\n  {{- m.role | upper }}:\n  {{ m.content }}\n{% endfor -%}\nEND", {"messages": MSGS[:2]}),
]


# Chat templates in the style of other model families (not byte copies of any; they exercise
# the constructs those templates use), rendered like FEATURES.
LLAMA31_STYLE = """{{- bos_token }}
{%- if custom_tools is defined %}{%- set tools = custom_tools %}{%- endif %}
{%- if not tools_in_user_message is defined %}{%- set tools_in_user_message = true %}{%- endif %}
{%- if not date_string is defined %}{%- set date_string = "26 Jul 2024" %}{%- endif %}
{%- if not tools is defined %}{%- set tools = none %}{%- endif %}
{%- if messages[0]['role'] == 'system' %}
    {%- set system_message = messages[0]['content']|trim %}
    {%- set messages = messages[1:] %}
{%- else %}
    {%- set system_message = "" %}
{%- endif %}
{{- "<|start_header_id|>system<|end_header_id|>\\n\\n" }}
{%- if tools is not none %}{{- "Environment: ipython\\n" }}{%- endif %}
{{- "Cutting Knowledge Date: December 2023\\n" }}
{{- "Today Date: " + date_string + "\\n\\n" }}
{{- system_message }}
{{- "<|eot_id|>" }}
{%- if tools_in_user_message and not tools is none %}
    {%- if messages | length != 0 %}
        {%- set first_user_message = messages[0]['content']|trim %}
        {%- set messages = messages[1:] %}
    {%- else %}
        {{- raise_exception("Cannot put tools in the first user message when there's no first user message!") }}
    {%- endif %}
    {{- '<|start_header_id|>user<|end_header_id|>\\n\\n' -}}
    {{- "Given the following functions, please respond with a JSON for a function call." }}
    {%- for t in tools %}
        {{- t | tojson(indent=4) }}
        {{- "\\n\\n" }}
    {%- endfor %}
    {{- first_user_message + "<|eot_id|>"}}
{%- endif %}
{%- for message in messages %}
    {%- if not (message.role == 'ipython' or message.role == 'tool' or 'tool_calls' in message) %}
        {{- '<|start_header_id|>' + message['role'] + '<|end_header_id|>\\n\\n'+ message['content'] | trim + '<|eot_id|>' }}
    {%- elif 'tool_calls' in message %}
        {%- if not message.tool_calls|length == 1 %}
            {{- raise_exception("This model only supports single tool-calls at once!") }}
        {%- endif %}
        {%- set tool_call = message.tool_calls[0].function %}
        {{- '<|start_header_id|>assistant<|end_header_id|>\\n\\n' -}}
        {{- '{"name": "' + tool_call.name + '", ' }}
        {{- '"parameters": ' }}
        {{- tool_call.arguments | tojson }}
        {{- "}" }}
        {{- "<|eot_id|>" }}
    {%- elif message.role == "tool" or message.role == "ipython" %}
        {{- "<|start_header_id|>ipython<|end_header_id|>\\n\\n" }}
        {%- if message.content is mapping or message.content is iterable %}
            {{- message.content | tojson }}
        {%- else %}
            {{- message.content }}
        {%- endif %}
        {{- "<|eot_id|>" }}
    {%- endif %}
{%- endfor %}
{%- if add_generation_prompt %}
    {{- '<|start_header_id|>assistant<|end_header_id|>\\n\\n' }}
{%- endif %}
"""

MISTRAL_STYLE = """{%- if messages[0]['role'] == 'system' %}
    {%- set system_message = messages[0]['content'] %}
    {%- set loop_messages = messages[1:] %}
{%- else %}
    {%- set loop_messages = messages %}
{%- endif %}

{{- bos_token }}
{%- for message in loop_messages %}
    {%- if (message['role'] == 'user') != (loop.index0 % 2 == 0) %}
        {{- raise_exception('After the optional system message, conversation roles must alternate user/assistant/user/assistant/...') }}
    {%- endif %}
    {%- if message['role'] == 'user' %}
        {%- if loop.first and system_message is defined %}
            {{- ' [INST] ' + system_message + '\\n\\n' + message['content'] + ' [/INST]' }}
        {%- else %}
            {{- ' [INST] ' + message['content'] + ' [/INST]' }}
        {%- endif %}
    {%- elif message['role'] == 'assistant' %}
        {{- ' ' + message['content'] + eos_token}}
    {%- else %}
        {{- raise_exception('Only user and assistant roles are supported, with the exception of an initial optional system message!') }}
    {%- endif %}
{%- endfor %}
"""

GEMMA_STYLE = """{{ bos_token }}{% if messages[0]['role'] == 'system' %}{{ raise_exception('System role not supported') }}{% endif %}{% for message in messages %}{% if (message['role'] == 'user') != (loop.index0 % 2 == 0) %}{{ raise_exception('Conversation roles must alternate user/assistant/user/assistant/...') }}{% endif %}{% if (message['role'] == 'assistant') %}{% set role = 'model' %}{% else %}{% set role = message['role'] %}{% endif %}{{ '<start_of_turn>' + role + '\\n' + message['content'] | trim + '<end_of_turn>\\n' }}{% endfor %}{% if add_generation_prompt %}{{'<start_of_turn>model\\n'}}{% endif %}"""

TOOL_MSGS = [
    {"role": "system", "content": "  Be brief.  "},
    {"role": "user", "content": "Weather in Paris?"},
    {"role": "assistant", "tool_calls": [{"type": "function", "function": {"name": "get_weather", "arguments": {"location": "Paris", "unit": "celsius"}}}]},
    {"role": "tool", "content": {"temp": 21, "sky": "clear ☀"}},
    {"role": "assistant", "content": "It is 21°C and clear."},
]

FAMILY_TEMPLATES = [
    ("llama31_style_tools", LLAMA31_STYLE, {"messages": TOOL_MSGS, "tools": TOOLS[:2], "bos_token": "<|begin_of_text|>", "add_generation_prompt": True}),
    ("llama31_style_plain", LLAMA31_STYLE, {"messages": MSGS, "bos_token": "<|begin_of_text|>", "add_generation_prompt": False, "date_string": "01 Jan 2025"}),
    ("llama31_style_two_calls", LLAMA31_STYLE, {"messages": [{"role": "user", "content": "x"}, {"role": "assistant", "tool_calls": [{"function": {"name": "a", "arguments": {}}}, {"function": {"name": "b", "arguments": {}}}]}], "bos_token": "<s>"}),
    ("mistral_style", MISTRAL_STYLE, {"messages": MSGS[:3], "bos_token": "<s>", "eos_token": "</s>"}),
    ("mistral_style_bad_order", MISTRAL_STYLE, {"messages": [MSGS[1], MSGS[1]], "bos_token": "<s>", "eos_token": "</s>"}),
    ("gemma_style", GEMMA_STYLE, {"messages": MSGS[1:], "bos_token": "<bos>", "add_generation_prompt": True}),
    ("gemma_style_system", GEMMA_STYLE, {"messages": MSGS, "bos_token": "<bos>"}),
]


def render_features():
    from transformers.utils.chat_template_utils import _compile_jinja_template

    lines = []
    n_err = 0
    names = set()
    for name, template, context in FEATURES + FAMILY_TEMPLATES:
        assert name not in names, name
        names.add(name)
        rec = {"name": name, "template": template, "context": context}
        try:
            compiled = _compile_jinja_template(template)
            rec["expected"] = compiled.render(**json.loads(json.dumps(context)))
        except Exception as e:  # noqa: BLE001
            n_err += 1
            rec["error"] = str(e) if not hasattr(e, "message") or e.message is None else e.message
            rec["error_type"] = type(e).__name__
            lineno = getattr(e, "lineno", None)
            if lineno is None:
                for frame in reversed(traceback.extract_tb(e.__traceback__)):
                    if frame.filename == "<template>":
                        lineno = frame.lineno
                        break
            if lineno is not None:
                rec["error_line"] = lineno
        lines.append(json.dumps(rec, ensure_ascii=False))
    path = os.path.join(OUT_DIR, "features.jsonl")
    with open(path, "w", encoding="utf-8") as f:
        f.write("\n".join(lines) + "\n")
    print(f"{path}: {len(lines)} feature templates ({n_err} errors)")


# ------------------------------------------------------------------ unicode tables


def unicode_tables(path):
    def ranges(pred):
        out = []
        start = None
        for cp in range(0x110000):
            p = pred(cp)
            if p and start is None:
                start = cp
            if not p and start is not None:
                out.append((start, cp - 1))
                start = None
        if start is not None:
            out.append((start, 0x10FFFF))
        return out

    def case_runs(f):
        # runs of (first, last, stride, delta): every stride-th code point in [first, last] maps to cp + delta
        runs = []
        for cp in range(0x110000):
            m = f(chr(cp))
            if len(m) != 1 or ord(m) == cp:
                continue
            d = ord(m) - cp
            if runs:
                s, e, st, dd = runs[-1]
                if dd == d and ((st == 0 and cp - e in (1, 2)) or (st and cp - e == st)):
                    runs[-1] = (s, cp, cp - e, d)
                    continue
            runs.append((cp, cp, 0, d))
        return [(s, e, st or 1, d) for s, e, st, d in runs]

    def emit(decl, items, fmt):
        lines = [decl + " = {"]
        cur = "    "
        for i, it in enumerate(items):
            tok = fmt % it + ("," if i < len(items) - 1 else "")
            if len(cur) + len(tok) > 118:
                lines.append(cur.rstrip())
                cur = "    "
            cur += tok
        lines.append(cur.rstrip())
        lines.append("};")
        return "\n".join(lines) + "\n"

    out = (
        "// Generated by tools/make_chat_template_fixtures.py --unicode-tables from Python %s's unicodedata\n"
        "// (str.isprintable, str.isalpha, str.isalnum, single-code-point str.upper / str.lower). Do not edit.\n"
        % sys.version.split()[0]
    )
    out += emit("constexpr CodeRange kNonPrintable[]", ranges(lambda c: not chr(c).isprintable()), "{0x%X,0x%X}")
    out += emit("constexpr CodeRange kAlpha[]", ranges(lambda c: chr(c).isalpha()), "{0x%X,0x%X}")
    out += emit("constexpr CodeRange kAlnum[]", ranges(lambda c: chr(c).isalnum()), "{0x%X,0x%X}")
    out += emit("constexpr CaseRun kToUpper[]", case_runs(str.upper), "{0x%X,0x%X,%d,%d}")
    out += emit("constexpr CaseRun kToLower[]", case_runs(str.lower), "{0x%X,0x%X,%d,%d}")
    with open(path, "w") as f:
        f.write(out)
    print(f"{path}: written")


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--unicode-tables", action="store_true", help="regenerate src/chat/jinja_unicode_data.inc only")
    ap.add_argument("--count", type=int, default=320, help="random conversations per template")
    args = ap.parse_args()
    if args.unicode_tables:
        unicode_tables(os.path.join(REPO, "src", "chat", "jinja_unicode_data.inc"))
        return
    os.makedirs(OUT_DIR, exist_ok=True)
    for i, name in enumerate(["qwen3", "llama3", "deepseek_v3"]):
        render_real(name, args.count, seed=1000 + i)
    render_features()


if __name__ == "__main__":
    main()
