#!/usr/bin/env python3
"""Writes a randomly initialised checkpoint with Qwen3-0.6B's exact shapes (HF transformers).

The checkpoint is used to benchmark pagoda against its peers (bench/peers/): llama.cpp (through
a GGUF converted from this folder) and HF transformers. The weights are random (seeded, HF's
default initialisation: normal(0, initializer_range=0.02) for linear/embedding weights, ones for
RMSNorm weights), so outputs are meaningless but the compute is exactly that of Qwen3-0.6B.

Folder contents (what `save_pretrained` of the real Qwen/Qwen3-0.6B repository holds):
  config.json, generation_config.json, model.safetensors (BF16, lm_head tied to embed_tokens
  and therefore not stored), tokenizer.json, tokenizer_config.json (copied unchanged from
  /work/shared/tokenizers/qwen3, which are the real Qwen3 tokenizer files; keeping them
  unchanged lets llama.cpp's convert_hf_to_gguf.py recognise the pre-tokenizer by its hash).

Usage:  python3 tools/make_qwen3_06b_checkpoint.py [--out models/qwen3-0.6b-random] [--seed 0]
Re-running with the same seed and the same torch version gives the same weights.
"""

import argparse
import json
import os
import shutil
import sys
import time

import torch
from transformers import GenerationConfig, Qwen3Config, Qwen3ForCausalLM

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DEFAULT_OUT = os.path.join(REPO_ROOT, "models", "qwen3-0.6b-random")
DEFAULT_TOKENIZER_DIR = "/work/shared/tokenizers/qwen3"


def qwen3_06b_config() -> Qwen3Config:
    # Values of Qwen/Qwen3-0.6B's config.json.
    return Qwen3Config(
        vocab_size=151936,
        hidden_size=1024,
        intermediate_size=3072,
        num_hidden_layers=28,
        num_attention_heads=16,
        num_key_value_heads=8,
        head_dim=128,
        hidden_act="silu",
        max_position_embeddings=40960,
        initializer_range=0.02,
        rms_norm_eps=1e-6,
        use_cache=True,
        tie_word_embeddings=True,
        rope_theta=1000000.0,
        rope_scaling=None,
        attention_bias=False,
        attention_dropout=0.0,
        use_sliding_window=False,
        sliding_window=None,
        max_window_layers=28,
        bos_token_id=151643,
        eos_token_id=151645,
        dtype="bfloat16",
    )


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", default=DEFAULT_OUT, help="output folder (default: %(default)s)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--tokenizer-dir", default=DEFAULT_TOKENIZER_DIR,
                    help="folder holding the real Qwen3 tokenizer.json and tokenizer_config.json")
    args = ap.parse_args()

    config = qwen3_06b_config()
    t0 = time.time()
    torch.manual_seed(args.seed)
    # Initialise in float32 (HF's init functions), then round to bfloat16 for storage.
    model = Qwen3ForCausalLM(config).to(torch.bfloat16).eval()
    n_params = sum(p.numel() for p in model.parameters())
    print(f"initialised {n_params / 1e6:.1f} M parameters (tied embeddings counted once) "
          f"in {time.time() - t0:.1f} s", file=sys.stderr)

    os.makedirs(args.out, exist_ok=True)
    model.save_pretrained(args.out, safe_serialization=True)

    # transformers >= 5 writes rope_theta inside "rope_parameters" and "dtype" instead of
    # "torch_dtype"; also record the legacy top-level keys of the real Qwen3-0.6B config.json so
    # that readers of either convention (pagoda, llama.cpp's converter, older transformers) agree.
    cfg_path = os.path.join(args.out, "config.json")
    with open(cfg_path) as f:
        cfg = json.load(f)
    cfg.setdefault("rope_theta", 1000000.0)
    cfg.setdefault("torch_dtype", "bfloat16")
    cfg.setdefault("rope_scaling", None)
    with open(cfg_path, "w") as f:
        json.dump(cfg, f, indent=2, sort_keys=True)
        f.write("\n")

    gen = GenerationConfig(
        bos_token_id=151643,
        eos_token_id=[151645, 151643],
        pad_token_id=151643,
        do_sample=True,
        temperature=0.6,
        top_k=20,
        top_p=0.95,
    )  # Qwen/Qwen3-0.6B's generation_config.json
    gen.save_pretrained(args.out)

    for name in ("tokenizer.json", "tokenizer_config.json"):
        shutil.copyfile(os.path.join(args.tokenizer_dir, name), os.path.join(args.out, name))

    with open(os.path.join(args.out, "config.json")) as f:
        saved = json.load(f)
    print(json.dumps({k: saved.get(k) for k in (
        "architectures", "vocab_size", "hidden_size", "intermediate_size", "num_hidden_layers",
        "num_attention_heads", "num_key_value_heads", "head_dim", "rope_theta", "rope_parameters",
        "rms_norm_eps", "max_position_embeddings", "tie_word_embeddings", "torch_dtype", "dtype")}),
        file=sys.stderr)
    print(f"wrote {args.out} in {time.time() - t0:.1f} s", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
