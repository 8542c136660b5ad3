#!/usr/bin/env python3
"""Generates the tokenizer test corpus and Hugging Face `tokenizers` reference fixtures.

Writes tests/tokenizer/data/corpus.json (the texts, plus invalid UTF-8 byte strings as hex) and
tests/tokenizer/data/expected_<name>.json for each tokenizer in ../shared/tokenizers:
  ids[i]            HF encode(texts[i], add_special_tokens=False).ids
  ids_special       {i: ids} with add_special_tokens=True for a subset
  decode[i]         HF decode(ids[i]) (null when equal to texts[i])
  decode_skip[i]    HF decode(ids[i], skip_special_tokens=True) (null when equal to decode[i])
  random_ids        random id sequences (specials, split byte tokens) with their decodes
  invalid_ids[j]    ids for bytes_hex[j] decoded with errors='replace' (what HF sees)
Usage: python3 tools/make_tokenizer_corpus.py [--shared ../shared] [--out tests/tokenizer/data]
"""
import argparse
import json
import os
import random
import unicodedata

from tokenizers import Tokenizer

SEED = 20240601
NAMES = ["qwen3", "llama3", "deepseek_v3"]

LATIN = ("the quick brown fox jumps over lazy dog Hello World naïve café résumé Straße "
         "Ångström façade coöperate Łódź Ærø jalapeño über señor déjà vu Zürich").split()
CYRILLIC = "Привет мир как дела Съешь же ещё этих мягких французских булок да выпей чаю".split()
GREEK = "Γειά σου κόσμε ξεσκεπάζω την ψυχοφθόρα βδελυγμία".split()
ARABIC = "مرحبا بالعالم كيف حالك اللغة العربية جميلة جدا".split()
HEBREW = "שלום עולם מה שלומך".split()
HINDI = "नमस्ते दुनिया आप कैसे हैं हिन्दी भाषा क्षत्रिय".split()
THAI = ["สวัสดีชาวโลก", "ภาษาไทย", "กรุงเทพมหานคร", "ขอบคุณครับ"]
CJK = ["你好世界", "我们今天去吃饭吧", "机器学习", "東京都", "こんにちは世界", "カタカナ", "ひらがな",
       "한국어 텍스트", "안녕하세요", "漢字と仮名", "中华人民共和国", "𠀋𠀍"]
EMOJI = ["😀", "👍🏽", "👨‍👩‍👧‍👦", "🏳️‍🌈", "❤️", "🤷🏿‍♀️", "🇯🇵", "🇺🇸", "👩🏻‍💻", "✨", "🔥🔥🔥", "🧑‍🚀", "☕"]
CODE = [
    "def foo(x):\n    return x * 2\n",
    "for (int i = 0; i < n; ++i) {\n\tsum += a[i];\n}\n",
    "if __name__ == '__main__':\n    main()\n",
    "const x = {a: 1, 'b': [2, 3]};\r\n",
    "SELECT * FROM users WHERE id = 42;",
    "#include <vector>\nint main() { return 0; }",
    "    \t  mixed   indentation\t\t\n\n\n",
    "fn main() -> Result<(), Box<dyn Error>> { Ok(()) }",
    "x+=1;y-=2;z**=3 // comment /* block */",
    "<html><body class=\"a\">&nbsp;&amp;</body></html>",
    "$ ls -la | grep '\\.py$' > out.txt 2>&1",
    "{\"key\": \"value\", \"n\": 3.14159, \"arr\": [1,2,3]}",
]
CONTRACTIONS = ["it's", "don't", "they're", "we've", "I'm", "you'll", "he'd", "IT'S", "DON'T",
                "They'Re", "WE'VE", "I'M", "YOU'LL", "HE'D", "'s", "'T", "rock'n'roll", "o'clock",
                "'tis", "ſ's", "K's"]
SPACES = [" ", "  ", "   ", "\t", "\n", "\r\n", "\n\n", " \n ", "\t\t", "\u00a0", "\u3000", "\u2003",
          "\u2028", "\u0085", "\u200b", "\u1680", "\u000b", "\u000c", "\u001c", "\r", " \r\n\r\n  "]
PUNCT = [".", ",", "!", "?", "...", "—", "–", "«", "»", "“", "”", "‘", "’", "(", ")", "[", "]",
         "{", "}", "@", "#", "$", "%", "^", "&", "*", "~", "`", "|", "\\", "/", ":", ";", "¿", "¡",
         "。", "、", "！", "？", "：", "€", "£", "¥", "©", "®", "™", "°", "±", "×", "÷", "→", "∑", "√"]
COMBINING = ["e\u0301", "a\u0308", "n\u0303", "A\u030a", "\u1e9b\u0323", "ﬁ", "Ⅸ", "①", "ｆｕｌｌ",
             "\u0915\u094d\u0937", "Å", "Ω", "é"]
SPECIALS = {
    "qwen3": ["<|im_start|>", "<|im_end|>", "<|endoftext|>", "<think>", "</think>", "<tool_call>",
              "</tool_call>", "<|fim_prefix|>", "<|vision_pad|>"],
    "llama3": ["<|begin_of_text|>", "<|end_of_text|>", "<|start_header_id|>", "<|end_header_id|>",
               "<|eot_id|>", "<|reserved_special_token_5|>", "<|python_tag|>"],
    "deepseek_v3": ["<｜begin▁of▁sentence｜>", "<｜end▁of▁sentence｜>", "<｜User｜>", "<｜Assistant｜>",
                    "<｜tool▁calls▁begin｜>", "<｜fim▁hole｜>", "<think>", "</think>"],
}
ALL_SPECIALS = sorted({s for v in SPECIALS.values() for s in v}) + ["<|im_start", "<|", "|>", "<｜"]


def digits(rng):
    return "".join(rng.choice("0123456789") for _ in range(rng.randint(1, 25)))


def piece(rng):
    kind = rng.random()
    if kind < 0.22:
        return rng.choice(LATIN)
    if kind < 0.30:
        return rng.choice(CYRILLIC + GREEK)
    if kind < 0.36:
        return rng.choice(ARABIC + HEBREW)
    if kind < 0.42:
        return rng.choice(HINDI + THAI)
    if kind < 0.50:
        return rng.choice(CJK)
    if kind < 0.56:
        return rng.choice(EMOJI)
    if kind < 0.62:
        return rng.choice(CODE)
    if kind < 0.68:
        return rng.choice(CONTRACTIONS)
    if kind < 0.76:
        return rng.choice(SPACES)
    if kind < 0.84:
        return rng.choice(PUNCT)
    if kind < 0.89:
        return digits(rng)
    if kind < 0.93:
        return rng.choice(COMBINING)
    if kind < 0.97:
        return rng.choice(ALL_SPECIALS)
    while True:
        ch = chr(rng.choice([rng.randint(0x20, 0x7e), rng.randint(0xa0, 0x2fff),
                             rng.randint(0x3000, 0xd7ff), rng.randint(0xe000, 0xfffd),
                             rng.randint(0x10000, 0x1faff)]))
        # Only characters assigned in Unicode 14 (PCRE2 10.42's tables): HF's regex engine knows
        # newer Unicode versions, so \p{L} differs on characters assigned since.
        if unicodedata.category(ch) not in ("Cn", "Co", "Cs"):
            return ch


def make_texts(rng):
    texts = ["", " ", "a", "Hello world", "Hello, world!", "  leading", "trailing  ", "\n", "\r\n",
             "   ", "\t", "12345678901234567890", "<|im_start|>user\nhi<|im_end|>\n",
             "<|begin_of_text|><|start_header_id|>user<|end_header_id|>\n\nhi<|eot_id|>",
             "<｜begin▁of▁sentence｜><｜User｜>hi<｜Assistant｜><think>\nok\n</think>",
             "<think></think>", "<|im_start|><|im_start|>", "x<|endoftext|>y", " <|endoftext|> ",
             "I'm sure it's fine, they're here and we've won; you'll see, he'd say.",
             "ABC'S DON'T It'S", "   \n\n   \t\t\n  x  ", "a" * 300, " " * 200, "\n" * 50,
             "😀" * 40, "👨‍👩‍👧‍👦" * 10, "1" * 100, "ab" * 200, "你好" * 100]
    for _ in range(2100):
        n = rng.choice([1, 2, 3, 5, 8, 13, 21, 40])
        sep = rng.choice(["", " ", " ", "\n", ""])
        texts.append(sep.join(piece(rng) for _ in range(n)))
    for _ in range(12):  # long mixed documents
        parts = []
        while sum(map(len, parts)) < rng.randint(10000, 16000):
            parts.append(piece(rng))
            parts.append(rng.choice([" ", " ", "", "\n", ". "]))
        texts.append("".join(parts))
    return texts


def make_invalid(rng):
    fixed = [b"\xff", b"abc\x80def", b"\xc3", b"\xc3(", b"\xe2\x82", b"\xe2\x82(", b"\xf0\x9f\x98",
             b"\xf0\x9f\x98 x", b"\xed\xa0\x80", b"\xc0\xaf", b"\xf5\x80\x80\x80", b"\xf4\x90\x80\x80",
             b"\xe0\x80\x80", b"\x80\x80\x80", b"ok \xfe\xfe ok", b"\xf0\x9f\x98\x80\xf0\x9f",
             "<|im_start|>".encode() + b"\xff" + "<|im_end|>".encode(), b"caf\xe9 cr\xe8me"]
    out = list(fixed)
    for _ in range(60):
        b = bytearray(rng.choice(["héllo wörld 你好 😀 ", "abc def ", "Привет "]).encode() * 3)
        for _ in range(rng.randint(1, 4)):
            pos = rng.randrange(len(b) + 1)
            b[pos:pos] = bytes([rng.randint(0x80, 0xff)])
        out.append(bytes(b))
    return out


def main():
    here = os.path.dirname(os.path.abspath(__file__))
    ap = argparse.ArgumentParser()
    ap.add_argument("--shared", default=os.path.join(here, "..", "..", "shared"))
    ap.add_argument("--out", default=os.path.join(here, "..", "tests", "tokenizer", "data"))
    args = ap.parse_args()
    rng = random.Random(SEED)
    texts = make_texts(rng)
    invalid = make_invalid(rng)
    os.makedirs(args.out, exist_ok=True)
    with open(os.path.join(args.out, "corpus.json"), "w", encoding="utf-8") as f:
        json.dump({"texts": texts, "invalid_hex": [b.hex() for b in invalid]}, f,
                  ensure_ascii=False, separators=(",", ":"))
    special_subset = list(range(0, len(texts), 10))
    for name in NAMES:
        tok = Tokenizer.from_file(os.path.join(args.shared, "tokenizers", name, "tokenizer.json"))
        ids = [e.ids for e in tok.encode_batch(texts, add_special_tokens=False)]
        dec = tok.decode_batch(ids, skip_special_tokens=False)
        dec_skip = tok.decode_batch(ids, skip_special_tokens=True)
        vocab = tok.get_vocab_size(with_added_tokens=True)
        specials = sorted(tok.get_added_tokens_decoder().keys())
        rrng = random.Random(SEED + len(name))
        random_ids = []
        for _ in range(300):
            seq = []
            for _ in range(rrng.randint(1, 30)):
                r = rrng.random()
                if r < 0.15:
                    seq.append(rrng.choice(specials))
                elif r < 0.45:
                    seq.append(rrng.randint(0, 400))  # byte tokens, often splitting characters
                else:
                    seq.append(rrng.randrange(vocab))
            random_ids.append(seq)
        fx = {
            "ids": ids,
            "ids_special": {str(i): tok.encode(texts[i], add_special_tokens=True).ids
                            for i in special_subset},
            "decode": [None if d == t else d for d, t in zip(dec, texts)],
            "decode_skip": [None if s == d else s for s, d in zip(dec_skip, dec)],
            "random_ids": random_ids,
            "random_decode": tok.decode_batch(random_ids, skip_special_tokens=False),
            "random_decode_skip": tok.decode_batch(random_ids, skip_special_tokens=True),
            "invalid_ids": [tok.encode(b.decode("utf-8", errors="replace"),
                                       add_special_tokens=False).ids for b in invalid],
        }
        with open(os.path.join(args.out, f"expected_{name}.json"), "w", encoding="utf-8") as f:
            json.dump(fx, f, ensure_ascii=False, separators=(",", ":"))
    print(f"{len(texts)} texts, {len(invalid)} invalid byte strings -> {args.out}")


if __name__ == "__main__":
    main()
