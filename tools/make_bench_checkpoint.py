#!/usr/bin/env python3
"""Writes a random-weight checkpoint with the shapes of a released MoE / hybrid Qwen model, for
benchmarks (bench/run_hybrid.sh). Outputs are meaningless; compute and memory traffic are those of
the shapes below.

Presets (the shapes are stated here because the benchmark figures are only as good as they are):

  qwen3_5-0.8b   Qwen3.5-0.8B-like dense hybrid, model_type qwen3_5_text (what transformers'
                 Qwen3_5ForCausalLM saves; llama.cpp converts it as such): hidden 1024, 24 layers
                 (3 Gated DeltaNet : 1 gated full attention, i.e. 18 + 6), MLP 3584, full attention
                 8 query heads / 2 KV heads of 256 (partial RoPE 0.25), DeltaNet 16 key + 16 value
                 heads of 128, conv kernel 4, vocabulary 248,320, tied embeddings. 0.75 B parameters.
  qwen3-30b-a3b  Qwen3-30B-A3B-like MoE, model_type qwen3_moe, every per-layer shape as released
                 (hidden 2048, 32 query / 4 KV heads of 128, 128 experts of 768, top-8 renormalised,
                 vocabulary 151,936, untied lm_head) but only --layers of the 48 layers (default 8),
                 to fit this machine's memory: 8 layers = 5.6 B parameters, 11.2 GB in BF16.

The tensor names and shapes come from transformers itself (the model built on the meta device),
with the MoE experts written per expert (mlp.experts.{e}.{gate,up,down}_proj.weight) as the released
Qwen3-MoE checkpoints store them. Values: normal(0, 0.02) for matrices (a window of one random pool,
which keeps writing ~11 GB fast; fresh values for the embeddings), RMSNorm weights 1 (0 for Qwen3.5's zero-centred norms, 1 for its
gated norm), DeltaNet A_log = log(uniform(1, 16)) and dt_bias = 1. BF16, one safetensors file, the real
Qwen3 tokenizer files (its 151,669 tokens are all below either vocabulary size).

  qwen3-8b, qwen3-0.6b, qwen2.5-0.5b   the dense models' released shapes (Qwen2.5-0.5B: q/k/v biases),
                 for the GPU benchmarks and checks (tools/gpu_check.sh).

Usage: python3 tools/make_bench_checkpoint.py --preset qwen3_5-0.8b --out models/qwen3_5-0.8b-random
       python3 tools/make_bench_checkpoint.py --preset qwen3-30b-a3b --layers 8 --out models/qwen3-30b-a3b-8l-random
"""

import argparse
import json
import os
import re
import shutil
import struct
import sys
import time

import numpy as np
import torch
import transformers
from transformers import AutoModelForCausalLM

TOKENIZER_DIR = "/work/shared/tokenizers/qwen3"


def qwen3_5_08b(args):
    return transformers.Qwen3_5TextConfig(
        vocab_size=248320, hidden_size=1024, intermediate_size=3584, num_hidden_layers=24,
        num_attention_heads=8, num_key_value_heads=2, head_dim=256,
        layer_types=(["linear_attention"] * 3 + ["full_attention"]) * 6,
        linear_num_key_heads=16, linear_num_value_heads=16, linear_key_head_dim=128, linear_value_head_dim=128,
        linear_conv_kernel_dim=4, max_position_embeddings=262144, rms_norm_eps=1e-6, tie_word_embeddings=True,
        rope_parameters={"rope_type": "default", "rope_theta": 10000000.0, "partial_rotary_factor": 0.25,
                         "mrope_section": [11, 11, 10], "mrope_interleaved": True},
        bos_token_id=151643, eos_token_id=151645, dtype="bfloat16")


def qwen3_30b_a3b(args):
    return transformers.Qwen3MoeConfig(
        vocab_size=151936, hidden_size=2048, intermediate_size=6144, num_hidden_layers=args.layers,
        num_attention_heads=32, num_key_value_heads=4, head_dim=128, num_experts=128, num_experts_per_tok=8,
        moe_intermediate_size=768, norm_topk_prob=True, decoder_sparse_step=1, mlp_only_layers=[],
        max_position_embeddings=40960, rms_norm_eps=1e-6, tie_word_embeddings=False,
        rope_parameters={"rope_type": "default", "rope_theta": 1000000.0},
        bos_token_id=151643, eos_token_id=151645, dtype="bfloat16")


def qwen3_8b(args):
    return transformers.Qwen3Config(
        vocab_size=151936, hidden_size=4096, intermediate_size=12288, num_hidden_layers=36, num_attention_heads=32,
        num_key_value_heads=8, head_dim=128, max_position_embeddings=40960, rms_norm_eps=1e-6,
        tie_word_embeddings=False, rope_parameters={"rope_type": "default", "rope_theta": 1000000.0},
        bos_token_id=151643, eos_token_id=151645, dtype="bfloat16")


def qwen3_06b(args):
    return transformers.Qwen3Config(
        vocab_size=151936, hidden_size=1024, intermediate_size=3072, num_hidden_layers=28, num_attention_heads=16,
        num_key_value_heads=8, head_dim=128, max_position_embeddings=40960, rms_norm_eps=1e-6,
        tie_word_embeddings=True, rope_parameters={"rope_type": "default", "rope_theta": 1000000.0},
        bos_token_id=151643, eos_token_id=151645, dtype="bfloat16")


def qwen2_5_05b(args):
    return transformers.Qwen2Config(
        vocab_size=151936, hidden_size=896, intermediate_size=4864, num_hidden_layers=24, num_attention_heads=14,
        num_key_value_heads=2, max_position_embeddings=32768, rms_norm_eps=1e-6, tie_word_embeddings=True,
        rope_parameters={"rope_type": "default", "rope_theta": 1000000.0},
        bos_token_id=151643, eos_token_id=151645, dtype="bfloat16")


PRESETS = {"qwen3_5-0.8b": qwen3_5_08b, "qwen3-30b-a3b": qwen3_30b_a3b, "qwen3-8b": qwen3_8b, "qwen3-0.6b": qwen3_06b,
           "qwen2.5-0.5b": qwen2_5_05b}


def stored_tensors(config):
    """(name, shape) in the order and layout a released checkpoint stores them."""
    with torch.device("meta"):
        model = AutoModelForCausalLM.from_config(config)
    out = []
    for name, t in model.state_dict().items():
        if name == "lm_head.weight" and config.tie_word_embeddings:
            continue
        m = re.fullmatch(r"(.*mlp\.experts)\.(gate_up_proj|down_proj)", name)
        if m:  # fused in memory ([E, 2I, H] and [E, H, I]); stored per expert
            E = t.shape[0]
            for e in range(E):
                if m.group(2) == "gate_up_proj":
                    I2, H = t.shape[1], t.shape[2]
                    out.append((f"{m.group(1)}.{e}.gate_proj.weight", (I2 // 2, H)))
                    out.append((f"{m.group(1)}.{e}.up_proj.weight", (I2 // 2, H)))
                else:
                    out.append((f"{m.group(1)}.{e}.down_proj.weight", tuple(t.shape[1:])))
            continue
        out.append((name, tuple(t.shape)))
    return out


def bf16_bytes(x):
    """float32 array -> bf16 bytes (round to nearest even)."""
    u = x.astype(np.float32).view(np.uint32)
    u = (u + 0x7FFF + ((u >> 16) & 1)) >> 16
    return u.astype(np.uint16).tobytes()


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--preset", choices=sorted(PRESETS), required=True)
    ap.add_argument("--out", required=True)
    ap.add_argument("--layers", type=int, default=8, help="qwen3-30b-a3b: layers kept of the 48 (default 8)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--init", choices=["hf", "golden"], default="hf",
                    help="hf: normal(0, 0.02) matrices, as transformers initialises (near-uniform logits, fine for "
                         "speed); golden: matrices normal(0, 1.5 / sqrt(fan_in)), embeddings normal(0, 1), norms "
                         "1 + 0.2 normal, biases 0.2 normal: peaked logits with clear greedy margins, for comparing "
                         "logits and greedy tokens against a reference")
    args = ap.parse_args()

    config = PRESETS[args.preset](args)
    zero_centred = config.model_type.startswith("qwen3_5")
    tensors = stored_tensors(config)
    n_params = sum(int(np.prod(s)) for _, s in tensors)
    print(f"{args.preset}: {len(tensors)} tensors, {n_params / 1e9:.3f} B parameters, "
          f"{2 * n_params / 1e9:.2f} GB BF16", file=sys.stderr)

    rng = np.random.default_rng(args.seed)
    pool = np.frombuffer(bf16_bytes(rng.standard_normal(1 << 26, dtype=np.float32) * 0.02), dtype=np.uint16)

    def golden_values(name, shape):
        n = int(np.prod(shape))
        if name.endswith("A_log"):
            return bf16_bytes(np.log(rng.uniform(1.0, 16.0, n)))
        if name.endswith("dt_bias"):
            return bf16_bytes(np.ones(n))
        if len(shape) == 1:
            if name.endswith(".bias"):
                return bf16_bytes(0.2 * rng.standard_normal(n, dtype=np.float32))
            base = 0.0 if zero_centred and "linear_attn.norm" not in name else 1.0
            return bf16_bytes(base + 0.2 * rng.standard_normal(n, dtype=np.float32))
        if "embed_tokens" in name:
            return bf16_bytes(rng.standard_normal(n, dtype=np.float32))
        return bf16_bytes(rng.standard_normal(n, dtype=np.float32) * (1.5 / np.sqrt(shape[-1])))

    def values(name, shape):
        if args.init == "golden":
            return golden_values(name, shape)
        n = int(np.prod(shape))
        if name.endswith("A_log"):
            return bf16_bytes(np.log(rng.uniform(1.0, 16.0, n)))
        if name.endswith("dt_bias"):
            return bf16_bytes(np.ones(n))
        if name.endswith("conv1d.weight"):
            return bf16_bytes(rng.standard_normal(n) * 0.3)
        if len(shape) == 1:  # norms
            ones = not zero_centred or "linear_attn.norm" in name
            return bf16_bytes(np.full(n, 1.0 if ones else 0.0))
        if n > pool.size // 4:  # big tensors (embeddings): fresh values, no repeated rows
            return bf16_bytes(rng.standard_normal(n, dtype=np.float32) * 0.02)
        start = int(rng.integers(0, pool.size - n))  # a window of the pool
        return pool[start:start + n].tobytes()

    os.makedirs(args.out, exist_ok=True)
    header, offset = {}, 0
    for name, shape in tensors:
        nbytes = 2 * int(np.prod(shape))
        header[name] = {"dtype": "BF16", "shape": list(shape), "data_offsets": [offset, offset + nbytes]}
        offset += nbytes
    header["__metadata__"] = {"format": "pt"}
    blob = json.dumps(header, separators=(",", ":")).encode()
    blob += b" " * (-len(blob) % 8)
    t0 = time.time()
    with open(os.path.join(args.out, "model.safetensors"), "wb") as f:
        f.write(struct.pack("<Q", len(blob)))
        f.write(blob)
        for name, shape in tensors:
            f.write(values(name, shape))
    print(f"wrote {offset / 1e9:.2f} GB in {time.time() - t0:.1f} s", file=sys.stderr)

    config.architectures = [AutoModelForCausalLM._model_mapping[type(config)].__name__]
    config.save_pretrained(args.out)
    transformers.GenerationConfig(bos_token_id=151643, eos_token_id=[151645, 151643]).save_pretrained(args.out)
    for f in ("tokenizer.json", "tokenizer_config.json"):
        shutil.copy(os.path.join(TOKENIZER_DIR, f), args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
