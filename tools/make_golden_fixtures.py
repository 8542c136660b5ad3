#!/usr/bin/env python3
"""Generates the golden model fixtures in tests/model/data/<name>/.

Each fixture is a tiny, randomly initialised Hugging Face checkpoint (config.json,
generation_config.json, model.safetensors) plus the reference outputs of Hugging Face
`transformers` for a few prompts of random token ids:

  expected.json   prompts, greedy tokens, row offsets into logits.bin, margins, and
                  reference_fp32_noise: max |float32 - float64| of transformers' own logits
  logits.bin      float32 little-endian rows of vocab_size logits:
                  for each prompt: one row per prompt position (prefill), then one row per
                  decode step (the logits after feeding generated token j, j = 0 .. n-2)
  logits_bf16kv.bin  the same rows for the last prompt, with K/V rounded to bfloat16 as they
                  enter the cache (what a BF16 KV cache computes), teacher-forced on the
                  float32 greedy tokens
  logits_fp8kv.bin   the same with K/V rounded to float8_e4m3fn (an FP8 KV cache)
  logits_bf16.bin the same rows for the last prompt from transformers run in bfloat16 (weights
                  and activations), teacher-forced on the float32 greedy tokens: how far
                  bfloat16 arithmetic alone moves the logits (the yardstick of the CUDA
                  backend's BF16 golden test, tests/cuda_emulated/golden_emulated_test.cc)

The reference runs in float32 on exactly the weights stored on disk (the checkpoint is saved
in its storage dtype first and then reloaded with dtype=float32), with the eager attention
implementation and a fresh model instance per prompt (so that dynamic-NTK RoPE state from an
earlier prompt cannot leak into the next, which HF's stateful rotary embedding would do).
Greedy decoding is a manual loop over a DynamicCache, which is what generate(do_sample=False)
does: post-RoPE keys are cached, so with dynamic NTK each step's keys keep the inv_freq of the
step that wrote them, and every forward recomputes inv_freq from max(position) + 1.

Prompts whose greedy path has a near tie (top-1 minus top-2 logit < MIN_MARGIN) are redrawn so
that the C++ test can demand identical tokens.

Usage:  python3 tools/make_golden_fixtures.py [--out tests/model/data] [--only NAME ...]
Re-running is deterministic (fixed seeds, CPU, single thread).
"""

import argparse
import json
import os
import shutil
import struct
import sys

import torch

import transformers
from transformers import AutoModelForCausalLM, GenerationConfig

MIN_MARGIN = 2e-3
NUM_GENERATED = 32

BASE = dict(
    vocab_size=512,
    hidden_size=64,
    intermediate_size=128,
    num_hidden_layers=2,
    num_attention_heads=4,
    num_key_value_heads=2,
    hidden_act="silu",
    max_position_embeddings=256,
    rms_norm_eps=1e-6,
    bos_token_id=1,
    eos_token_id=2,
)

# name -> (config class name, config overrides, storage dtype, prompt lengths, legacy rope format)
FIXTURES = {
    # qkv bias, GQA 4:2, untied lm_head
    "qwen2": dict(cls="Qwen2Config", cfg=dict(rope_parameters={"rope_type": "default", "rope_theta": 10000.0}),
                  dtype="bfloat16", prompts=[1, 9, 40]),
    # q/k norm, tied embeddings, head_dim 32 != hidden / heads = 16, three layers
    "qwen3": dict(cls="Qwen3Config",
                  cfg=dict(head_dim=32, num_hidden_layers=3, intermediate_size=96, tie_word_embeddings=True,
                           rope_parameters={"rope_type": "default", "rope_theta": 1000000.0}),
                  dtype="bfloat16", prompts=[1, 9, 40]),
    # YaRN written in the legacy top-level rope_theta / rope_scaling {"type": ...} form, MQA (1 kv head)
    "qwen3_yarn": dict(cls="Qwen3Config",
                       cfg=dict(head_dim=16, num_key_value_heads=1, max_position_embeddings=128,
                                rope_parameters={"rope_type": "yarn", "rope_theta": 10000.0, "factor": 4.0,
                                                 "original_max_position_embeddings": 32}),
                       dtype="bfloat16", prompts=[1, 9, 40], legacy_rope=True),
    # Llama 3 rope scaling with a small original context so all three frequency bands occur
    "llama3": dict(cls="LlamaConfig",
                   cfg=dict(rope_parameters={"rope_type": "llama3", "rope_theta": 10000.0, "factor": 8.0,
                                             "low_freq_factor": 1.0, "high_freq_factor": 4.0,
                                             "original_max_position_embeddings": 32}),
                   dtype="bfloat16", prompts=[1, 9, 40]),
    # linear scaling, MHA, attention_bias (q/k/v/o biases), stored as F16
    "llama_linear_f16": dict(cls="LlamaConfig",
                             cfg=dict(num_key_value_heads=4, attention_bias=True,
                                      rope_parameters={"rope_type": "linear", "rope_theta": 10000.0, "factor": 2.0}),
                             dtype="float16", prompts=[1, 9, 40]),
    # dynamic NTK with max_position_embeddings 48: the 40-token prompt crosses 48 while decoding,
    # the 60-token prompt already in prefill. Stored as F32.
    "qwen2_dynamic_f32": dict(cls="Qwen2Config",
                              cfg=dict(max_position_embeddings=48,
                                       rope_parameters={"rope_type": "dynamic", "rope_theta": 10000.0, "factor": 2.0}),
                              dtype="float32", prompts=[9, 40, 60]),
    # sliding window (8 tokens) on layers >= max_window_layers = 1
    "qwen2_sliding": dict(cls="Qwen2Config",
                          cfg=dict(use_sliding_window=True, sliding_window=8, max_window_layers=1,
                                   rope_parameters={"rope_type": "default", "rope_theta": 10000.0}),
                          dtype="bfloat16", prompts=[1, 9, 40]),
    # Qwen3-MoE: 8 experts, top-2 with renormalised weights, layer 0 dense (mlp_only_layers), layers
    # 1-3 sparse; head_dim absent (-> hidden / heads = 16, unlike dense qwen3's 128). save_pretrained
    # writes the experts per expert (mlp.experts.{e}.{gate,up,down}_proj.weight) and num_experts as
    # num_local_experts.
    "qwen3_moe": dict(cls="Qwen3MoeConfig",
                      cfg=dict(num_hidden_layers=4, num_experts=8, num_experts_per_tok=2, moe_intermediate_size=32,
                               norm_topk_prob=True, decoder_sparse_step=1, mlp_only_layers=[0],
                               rope_parameters={"rope_type": "default", "rope_theta": 1000000.0}),
                      dtype="bfloat16", prompts=[1, 9, 40]),
    # Qwen3-Next hybrid: layers 0, 2 Gated DeltaNet (interleaved in_proj_qkvz / in_proj_ba, 2 key heads,
    # 4 value heads), layers 1, 3 gated full attention (head_dim 32, partial RoPE 0.25 -> 8 dims);
    # layer 0 dense MLP, layers 1-3 MoE (8 experts, top-2) with a sigmoid-gated shared expert. The
    # 70-token prompt spans two 64-token chunks of the chunked delta rule.
    "qwen3_next": dict(cls="Qwen3NextConfig",
                       cfg=dict(num_hidden_layers=4, head_dim=32, partial_rotary_factor=0.25,
                                layer_types=["linear_attention", "full_attention"] * 2,
                                linear_num_key_heads=2, linear_num_value_heads=4, linear_key_head_dim=16,
                                linear_value_head_dim=16, linear_conv_kernel_dim=4,
                                num_experts=8, num_experts_per_tok=2, moe_intermediate_size=32,
                                shared_expert_intermediate_size=48, norm_topk_prob=True, decoder_sparse_step=1,
                                mlp_only_layers=[0],
                                rope_parameters={"rope_type": "default", "rope_theta": 10000.0,
                                                 "partial_rotary_factor": 0.25}),
                       dtype="bfloat16", prompts=[1, 9, 70]),
    # Qwen3.5 dense text model, laid out like a real Qwen3.5 checkpoint (see nest_qwen3_5): config.json
    # model_type "qwen3_5" with the language model's fields in text_config, tensors under
    # model.language_model.*; the reference is Qwen3_5ForCausalLM (AutoModelForCausalLM maps qwen3_5
    # to it and strips the language_model prefix). Split in_proj_qkv / z / b / a projections; layers
    # 0-2 Gated DeltaNet and layer 3 gated full attention (the default full_attention_interval 4),
    # 2 key heads, 6 value heads; dense MLP on every layer; interleaved mRoPE (sections [2, 1, 1] over
    # the 8 rotary dims of partial RoPE 0.25), which with text-only positions is 1-D RoPE; tied embeddings.
    "qwen3_5": dict(cls="Qwen3_5TextConfig",
                    cfg=dict(num_hidden_layers=4, head_dim=32, tie_word_embeddings=True,
                             layer_types=["linear_attention"] * 3 + ["full_attention"],
                             linear_num_key_heads=2, linear_num_value_heads=6, linear_key_head_dim=16,
                             linear_value_head_dim=16, linear_conv_kernel_dim=4,
                             rope_parameters={"rope_type": "default", "rope_theta": 10000000.0,
                                              "partial_rotary_factor": 0.25, "mrope_section": [2, 1, 1],
                                              "mrope_interleaved": True}),
                    dtype="bfloat16", prompts=[1, 9, 70], nest="qwen3_5"),
    # Qwen3.5-MoE text model, nested the same way (model_type "qwen3_5_moe"): every layer MoE (8 experts,
    # top-2, always renormalised) with a sigmoid-gated shared expert, no intermediate_size in the config;
    # layers alternate Gated DeltaNet / gated full attention, 2 key heads, 4 value heads.
    "qwen3_5_moe": dict(cls="Qwen3_5MoeTextConfig",
                        cfg=dict(num_hidden_layers=4, head_dim=32,
                                 layer_types=["linear_attention", "full_attention"] * 2,
                                 linear_num_key_heads=2, linear_num_value_heads=4, linear_key_head_dim=16,
                                 linear_value_head_dim=16, linear_conv_kernel_dim=4,
                                 num_experts=8, num_experts_per_tok=2, moe_intermediate_size=32,
                                 shared_expert_intermediate_size=48,
                                 rope_parameters={"rope_type": "default", "rope_theta": 10000000.0,
                                                  "partial_rotary_factor": 0.25, "mrope_section": [2, 1, 1],
                                                  "mrope_interleaved": True}),
                        drop=["intermediate_size"], dtype="bfloat16", prompts=[1, 9, 70], nest="qwen3_5_moe"),
    # FP8 checkpoints in the layout of Qwen's released *-FP8 models (quant_method "fp8", e4m3, dynamic
    # activations): the BF16 weights of the named fixture (same config and seed, so bit for bit the same
    # weights), every linear of the layer stack stored as float8_e4m3fn with a float32
    # `weight_scale_inv` per 32 x 32 block (see fp8_block_quantize); embeddings, norms, lm_head and
    # MoE routers stay BF16. The reference is transformers loading the FP8 checkpoint on the CPU,
    # where it dequantizes every weight (weight * scale_inv per block) to the model dtype.
    "qwen3_fp8": dict(fp8_of="qwen3", fp8_block=[32, 32]),
    "qwen3_moe_fp8": dict(fp8_of="qwen3_moe", fp8_block=[32, 32]),
    # Hybrid models: 16 x 16 blocks, so that every linear's rows and columns are a multiple of the
    # block or smaller than one (transformers derives the block from the scale grid); the Gated
    # DeltaNet projections (in_proj_*, out_proj) and the shared experts are FP8 too.
    "qwen3_next_fp8": dict(fp8_of="qwen3_next", fp8_block=[16, 16]),
    "qwen3_5_fp8": dict(fp8_of="qwen3_5", fp8_block=[16, 16]),
    "qwen3_5_moe_fp8": dict(fp8_of="qwen3_5_moe", fp8_block=[16, 16]),
}

# Linear weights an FP8 checkpoint stores quantized (suffixes of tensor names).
FP8_LINEARS = ("q_proj.weight", "k_proj.weight", "v_proj.weight", "o_proj.weight", "gate_proj.weight",
               "up_proj.weight", "down_proj.weight", "in_proj_qkvz.weight", "in_proj_ba.weight", "in_proj_qkv.weight",
               "in_proj_z.weight", "in_proj_b.weight", "in_proj_a.weight", "out_proj.weight")

# Smallest gap allowed between the k-th and (k+1)-th router probability of any token (MoE only):
# a closer call could route differently under float32 rounding differences.
MIN_ROUTER_GAP = 1e-4

DTYPES = {"bfloat16": torch.bfloat16, "float16": torch.float16, "float32": torch.float32}


def randomize(model, seed):
    """Weights with enough spread that greedy decoding does not collapse onto one token."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in sorted(model.named_parameters()):
            if name.endswith("norm.weight"):
                p.copy_(1.0 + 0.2 * torch.randn(p.shape, generator=g))
            elif name.endswith(".bias"):
                p.copy_(0.2 * torch.randn(p.shape, generator=g))
            elif "embed_tokens" in name:
                p.copy_(1.0 * torch.randn(p.shape, generator=g))
            else:
                fan_in = p.shape[-1]
                p.copy_(torch.randn(p.shape, generator=g) * (1.5 / fan_in ** 0.5))


def to_legacy_rope(config_path):
    with open(config_path) as f:
        cfg = json.load(f)
    rp = cfg.pop("rope_parameters")
    cfg["rope_theta"] = rp.pop("rope_theta")
    rp["type"] = rp.pop("rope_type")
    cfg["rope_scaling"] = rp
    with open(config_path, "w") as f:
        json.dump(cfg, f, indent=2, sort_keys=True)
        f.write("\n")


def nest_qwen3_5(out_dir, model_type):
    """Rewrites a saved Qwen3_5(Moe)ForCausalLM (model_type qwen3_5[_moe]_text, tensors model.*) into the
    layout of a released Qwen3.5 checkpoint: config.json {"model_type": "qwen3_5[_moe]", "text_config":
    {...}, ...} and tensors model.language_model.* (lm_head.weight stays; no vision tower is stored)."""
    from safetensors.torch import load_file, save_file
    config_path = os.path.join(out_dir, "config.json")
    with open(config_path) as f:
        text = json.load(f)
    top = {"architectures": ["Qwen3_5MoeForConditionalGeneration" if model_type == "qwen3_5_moe"
                             else "Qwen3_5ForConditionalGeneration"],
           "model_type": model_type,
           "text_config": {k: v for k, v in text.items() if k not in ("architectures", "transformers_version")},
           "tie_word_embeddings": text.get("tie_word_embeddings", False),
           "transformers_version": text.get("transformers_version")}
    if "dtype" in text:
        top["dtype"] = text["dtype"]
    with open(config_path, "w") as f:
        json.dump(top, f, indent=2, sort_keys=True)
        f.write("\n")
    st_path = os.path.join(out_dir, "model.safetensors")
    tensors = load_file(st_path)
    renamed = {("model.language_model." + k[len("model."):] if k.startswith("model.") else k): v
               for k, v in tensors.items()}
    save_file(renamed, st_path, metadata={"format": "pt"})


def fp8_block_quantize(w, bn, bk):
    """Block-wise FP8 quantization (DeepSeek-V3 / Qwen3-FP8): per bn x bk block, scale = amax / 448
    (at least 1e-12) and q = float8_e4m3fn(w / scale) (round to nearest even; |w / scale| <= 448)."""
    n, k = w.shape
    bn, bk = min(bn, n), min(bk, k)  # a weight smaller than a block is one block
    assert n % bn == 0 and k % bk == 0, (w.shape, bn, bk)
    wf = w.to(torch.float32).reshape(n // bn, bn, k // bk, bk)
    scale = (wf.abs().amax(dim=(1, 3)) / 448.0).clamp(min=1e-12)
    q = (wf / scale[:, None, :, None]).clamp(-448.0, 448.0).to(torch.float8_e4m3fn)
    return q.reshape(n, k).contiguous(), scale.contiguous()


def quantize_checkpoint_fp8(out_dir, block):
    """Rewrites the saved checkpoint in out_dir as an FP8 checkpoint (see FIXTURES["qwen3_fp8"])."""
    from safetensors.torch import load_file, save_file
    st_path = os.path.join(out_dir, "model.safetensors")
    tensors = load_file(st_path)
    out = {}
    for name, t in sorted(tensors.items()):
        if name.endswith(FP8_LINEARS) and t.dim() == 2:
            q, s = fp8_block_quantize(t, block[0], block[1])
            out[name] = q
            out[name + "_scale_inv"] = s
        else:
            out[name] = t
    save_file(out, st_path, metadata={"format": "pt"})
    config_path = os.path.join(out_dir, "config.json")
    with open(config_path) as f:
        cfg = json.load(f)
    cfg["quantization_config"] = {"quant_method": "fp8", "fmt": "e4m3", "activation_scheme": "dynamic",
                                  "weight_block_size": list(block)}
    with open(config_path, "w") as f:
        json.dump(cfg, f, indent=2, sort_keys=True)
        f.write("\n")


def reference(model_dir, prompt):
    """Float32 HF reference: prefill logits [len, V], greedy tokens, decode logits [n-1, V]."""
    model, info = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32, attn_implementation="eager",
                                                       output_loading_info=True)
    bad = {k: v for k, v in info.items() if v and k in ("missing_keys", "unexpected_keys", "mismatched_keys")}
    if bad:
        sys.exit(f"{model_dir}: checkpoint did not load cleanly: {bad}")
    model.eval()
    margins = []
    router_gaps = []

    def router_hook(module, inputs, output):
        probs = torch.softmax(output[0].float(), dim=-1)
        top = torch.topk(probs, module.top_k + 1, dim=-1).values
        router_gaps.append(float((top[:, -2] - top[:, -1]).min()))

    for module in model.modules():
        if type(module).__name__.endswith("TopKRouter"):
            module.register_forward_hook(router_hook)
    with torch.no_grad():
        ids = torch.tensor([prompt], dtype=torch.long)
        out = model(input_ids=ids, use_cache=True)
        prefill = out.logits[0].float().clone()
        past = out.past_key_values
        last = prefill[-1]
        tokens = []
        decode = []
        for step in range(NUM_GENERATED):
            top = torch.topk(last, 2).values
            margins.append(float(top[0] - top[1]))
            tok = int(torch.argmax(last))
            tokens.append(tok)
            if step == NUM_GENERATED - 1:
                break
            out = model(input_ids=torch.tensor([[tok]]), past_key_values=past, use_cache=True)
            past = out.past_key_values
            last = out.logits[0, -1].float().clone()
            decode.append(last)
    decode = torch.stack(decode) if decode else torch.zeros(0, prefill.shape[1])
    return prefill, tokens, decode, min(margins), min(router_gaps, default=None)


def bf16_kv_reference(model_dir, prompt, generated):
    """What a BF16 KV cache computes: the float32 reference with every K/V entry rounded to bfloat16
    as it enters the cache (the attention reads the rounded values, also for the tokens of the
    step that wrote them), teacher-forced on the float32 greedy tokens. Same row layout as the
    float32 rows of that prompt: prefill rows, then one row per decode step."""
    return rounded_kv_reference(model_dir, prompt, generated, torch.bfloat16)


def fp8_kv_reference(model_dir, prompt, generated):
    """What an FP8 (E4M3, vLLM's --kv-cache-dtype fp8, unscaled) KV cache computes: as
    bf16_kv_reference with K/V rounded to float8_e4m3fn (round to nearest even)."""
    return rounded_kv_reference(model_dir, prompt, generated, torch.float8_e4m3fn)


def rounded_kv_reference(model_dir, prompt, generated, kv_dtype):
    from transformers import cache_utils
    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32, attn_implementation="eager").eval()
    originals = {}
    for cls in (cache_utils.DynamicLayer, cache_utils.DynamicSlidingWindowLayer):
        originals[cls] = cls.update

        def rounded(self, key_states, value_states, *args, _orig=cls.update, **kwargs):
            return _orig(self, key_states.to(kv_dtype).float(), value_states.to(kv_dtype).float(),
                         *args, **kwargs)
        cls.update = rounded
    try:
        with torch.no_grad():
            out = model(input_ids=torch.tensor([prompt], dtype=torch.long), use_cache=True)
            rows = [out.logits[0].float().clone()]
            past = out.past_key_values
            for tok in generated[:-1]:
                out = model(input_ids=torch.tensor([[tok]]), past_key_values=past, use_cache=True)
                past = out.past_key_values
                rows.append(out.logits[0].float().clone())
    finally:
        for cls, fn in originals.items():
            cls.update = fn
    return torch.cat(rows)


def bf16_reference(model_dir, prompt, generated):
    """transformers in bfloat16 (weights cast, activations bfloat16), teacher-forced on the float32
    greedy tokens through its cache; same row layout as the float32 rows of that prompt."""
    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.bfloat16, attn_implementation="eager").eval()
    with torch.no_grad():
        out = model(input_ids=torch.tensor([prompt], dtype=torch.long), use_cache=True)
        rows = [out.logits[0].float().clone()]
        past = out.past_key_values
        for tok in generated[:-1]:
            out = model(input_ids=torch.tensor([[tok]]), past_key_values=past, use_cache=True)
            past = out.past_key_values
            rows.append(out.logits[0].float().clone())
    return torch.cat(rows)


def add_last_prompt_reference(name, out_root, key, filename, reference, what):
    """Adds `filename` (the rows of reference(model_dir, tokens, generated) for the fixture's last
    prompt) to an existing fixture and names it under expected.json's `key`; the rest of the
    fixture is left as it is."""
    out_dir = os.path.join(out_root, name)
    path = os.path.join(out_dir, "expected.json")
    with open(path) as f:
        expected = json.load(f)
    index = len(expected["prompts"]) - 1
    p = expected["prompts"][index]
    logits = reference(out_dir, p["tokens"], p["generated"]).contiguous()
    assert logits.shape[0] == len(p["tokens"]) + p["num_decode_rows"]
    with open(os.path.join(out_dir, filename), "wb") as f:
        f.write(struct.pack(f"<{logits.numel()}f", *logits.flatten().tolist()))
    expected[key] = {"prompt": index, "logits_file": filename, "num_rows": logits.shape[0]}
    with open(path, "w") as f:
        json.dump(expected, f, indent=1)
        f.write("\n")
    print(f"  {name}: {what}, prompt {index}, {logits.shape[0]} rows")


def add_fp8_kv_reference(name, out_root):
    """logits_fp8kv.bin: see fp8_kv_reference."""
    add_last_prompt_reference(name, out_root, "fp8_kv", "logits_fp8kv.bin", fp8_kv_reference, "fp8 KV reference")


def add_bf16_reference(name, out_root):
    """logits_bf16.bin: see bf16_reference."""
    add_last_prompt_reference(name, out_root, "bf16", "logits_bf16.bin", bf16_reference, "bfloat16 reference")


def add_bf16_kv_reference(name, out_root):
    """logits_bf16kv.bin: see bf16_kv_reference."""
    add_last_prompt_reference(name, out_root, "bf16_kv", "logits_bf16kv.bin", bf16_kv_reference, "bf16 KV reference")


def reference_noise(model_dir, prompts):
    """transformers' own float32 rounding noise on this fixture: max |float32 logit - float64 logit|
    over every reference row (prefill rows and the decode rows teacher-forced on the float32 greedy
    tokens). The golden test adds twice this to its bound: where the reference itself is only this
    accurate, nothing can be held closer to it."""
    worst = 0.0
    m32 = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32, attn_implementation="eager").eval()
    m64 = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float64, attn_implementation="eager",
                                               experts_implementation="eager").eval()
    with torch.no_grad():
        for p in prompts:
            seq = torch.tensor([p["tokens"] + p["generated"][:-1]], dtype=torch.long)
            a = m32(input_ids=seq).logits[0].double()
            b = m64(input_ids=seq).logits[0]
            worst = max(worst, float((a - b).abs().max()))
    return worst


def add_reference_noise(name, out_root):
    out_dir = os.path.join(out_root, name)
    path = os.path.join(out_dir, "expected.json")
    with open(path) as f:
        expected = json.load(f)
    expected["reference_fp32_noise"] = float(f"{reference_noise(out_dir, expected['prompts']):.3g}")
    with open(path, "w") as f:
        json.dump(expected, f, indent=1)
        f.write("\n")
    print(f"  {name}: float32 vs float64 reference, max |diff| {expected['reference_fp32_noise']}")


def rope_reference(model_dir):
    """HF's inv_freq and attention scaling at load time; for dynamic NTK also at longer lengths."""
    from transformers.modeling_rope_utils import ROPE_INIT_FUNCTIONS
    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32)
    rotary = model.model.rotary_emb
    rope = {"rope_type": rotary.rope_type, "inv_freq": rotary.original_inv_freq.tolist(),
            "attention_factor": float(rotary.attention_scaling)}
    if rotary.rope_type == "dynamic":
        max_pos = model.config.max_position_embeddings
        rope["dynamic"] = []
        for seq_len in (max_pos, max_pos + 1, max_pos + 24, 3 * max_pos + 5):
            # what dynamic_frequency_update passes: torch.max(position_ids) + 1, an int64 tensor
            inv, _ = ROPE_INIT_FUNCTIONS["dynamic"](model.config, None, seq_len=torch.tensor(seq_len))
            rope["dynamic"].append({"seq_len": seq_len, "inv_freq": inv.tolist()})
    return rope


def make_fixture(name, spec, out_root, seed):
    if "fp8_of" in spec:
        source = spec["fp8_of"]
        spec = dict(FIXTURES[source], fp8_block=spec["fp8_block"])
        seed = 1234 + 17 * list(FIXTURES).index(source)
    out_dir = os.path.join(out_root, name)
    if os.path.exists(out_dir):
        shutil.rmtree(out_dir)
    torch.manual_seed(seed)
    cfg_cls = getattr(transformers, spec["cls"])
    cfg_kwargs = dict(BASE)
    cfg_kwargs.update(spec["cfg"])
    for key in spec.get("drop", []):
        cfg_kwargs.pop(key)
    config = cfg_cls(**cfg_kwargs)
    model = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    randomize(model, seed)
    model = model.to(DTYPES[spec["dtype"]])
    model.generation_config = GenerationConfig(bos_token_id=1, eos_token_id=2, do_sample=False)
    model.save_pretrained(out_dir, safe_serialization=True)
    if spec.get("legacy_rope"):
        to_legacy_rope(os.path.join(out_dir, "config.json"))
    if spec.get("nest"):
        nest_qwen3_5(out_dir, spec["nest"])
    if spec.get("fp8_block"):
        quantize_checkpoint_fp8(out_dir, spec["fp8_block"])

    vocab = config.vocab_size
    g = torch.Generator().manual_seed(seed + 1000)
    rows = []
    prompts = []
    offset = 0
    for length in spec["prompts"]:
        for attempt in range(50):
            prompt = torch.randint(3, vocab, (length,), generator=g).tolist()
            prefill, tokens, decode, margin, router_gap = reference(out_dir, prompt)
            if margin >= MIN_MARGIN and (router_gap is None or router_gap >= MIN_ROUTER_GAP):
                break
        else:
            sys.exit(f"{name}: no prompt of length {length} without a near tie (greedy or router)")
        distinct = len(set(tokens))
        prompts.append({
            "tokens": prompt,
            "generated": tokens,
            "prefill_logits_row": offset,
            "decode_logits_row": offset + prefill.shape[0],
            "num_decode_rows": decode.shape[0],
            "min_greedy_margin": round(margin, 6),
            "distinct_generated": distinct,
        })
        if router_gap is not None:
            prompts[-1]["min_router_gap"] = round(router_gap, 6)
        offset += prefill.shape[0] + decode.shape[0]
        rows.append(prefill)
        rows.append(decode)
        print(f"  {name}: prompt {length:3d}  margin {margin:.4f}  distinct {distinct}/{len(tokens)}  "
              f"logit std {float(prefill.std()):.3f}")
    logits = torch.cat(rows).to(torch.float32).contiguous()
    with open(os.path.join(out_dir, "logits.bin"), "wb") as f:
        f.write(struct.pack(f"<{logits.numel()}f", *logits.flatten().tolist()))
    expected = {
        "generator": "tools/make_golden_fixtures.py",
        "transformers_version": transformers.__version__,
        "torch_version": torch.__version__.split("+")[0],
        "storage_dtype": "fp8_e4m3 linears, block " + str(spec["fp8_block"]) if spec.get("fp8_block") else spec["dtype"],
        "vocab_size": vocab,
        "num_logits_rows": offset,
        "logits_file": "logits.bin",
        "rope": rope_reference(out_dir),
        "prompts": prompts,
    }
    with open(os.path.join(out_dir, "expected.json"), "w") as f:
        json.dump(expected, f, indent=1)
        f.write("\n")
    add_bf16_kv_reference(name, out_root)
    add_fp8_kv_reference(name, out_root)
    add_bf16_reference(name, out_root)
    add_reference_noise(name, out_root)


def main():
    ap = argparse.ArgumentParser()
    here = os.path.dirname(os.path.abspath(__file__))
    ap.add_argument("--out", default=os.path.join(here, "..", "tests", "model", "data"))
    ap.add_argument("--only", nargs="*")
    ap.add_argument("--bf16-kv-only", action="store_true",
                    help="only (re)write the BF16-KV reference of existing fixtures (logits_bf16kv.bin)")
    ap.add_argument("--fp8-kv-only", action="store_true",
                    help="only (re)write the FP8-KV reference of existing fixtures (logits_fp8kv.bin)")
    ap.add_argument("--bf16-only", action="store_true",
                    help="only (re)write the bfloat16 reference of existing fixtures (logits_bf16.bin)")
    ap.add_argument("--noise-only", action="store_true",
                    help="only (re)measure transformers' float32-vs-float64 noise of existing fixtures")
    args = ap.parse_args()
    torch.set_num_threads(1)
    torch.use_deterministic_algorithms(True)
    transformers.logging.set_verbosity_error()
    transformers.utils.logging.disable_progress_bar()
    os.makedirs(args.out, exist_ok=True)
    for i, (name, spec) in enumerate(FIXTURES.items()):
        if args.only and name not in args.only:
            continue
        print(name)
        if args.bf16_kv_only:
            add_bf16_kv_reference(name, args.out)
        elif args.fp8_kv_only:
            add_fp8_kv_reference(name, args.out)
        elif args.bf16_only:
            add_bf16_reference(name, args.out)
        elif args.noise_only:
            add_reference_noise(name, args.out)
        else:
            make_fixture(name, spec, args.out, seed=1234 + 17 * i)


if __name__ == "__main__":
    main()
