"""`pagoda serve --device cuda` on the CUDA backend over the host emulation of the CUDA runtime
(build/bin/pagoda_emulated, tests/cuda_emulated), driven by the official `openai` client: the
server's GPU paths end to end (BF16 weights and KV cache, sampling and logprobs on the device,
decode steps replayed as CUDA graphs, async scheduling). The same checks as test_openai_server.py's, on that backend: streaming
equals non-streaming, 8 concurrent seeded streams each equal the request alone, logprobs, a
client disconnect frees the request's KV blocks.
"""

import os

import openai
import pytest

import test_openai_server as base
from test_openai_server import model_dir  # noqa: F401 (the tiny checkpoint fixture, shared)

BINARY = "pagoda_emulated"

pytestmark = pytest.mark.skipif(not os.path.exists(os.path.join(base.BUILD, "bin", BINARY)),
                                reason="no build/bin/pagoda_emulated (x86-64 non-sanitizer builds only)")


@pytest.fixture(scope="module")
def cuda_server(model_dir):
    # cuBLASLt (the emulation's host loop) for every linear: deciding between it and the small-batch
    # GEMM times both on the emulation (minutes for the 151,936-row LM head, and the emulation's
    # timings say nothing of a GPU); tests/cuda/cuda_ops_test.cc covers every PAGODA_CUDA_GEMV mode.
    old = os.environ.get("PAGODA_CUDA_GEMV")
    os.environ["PAGODA_CUDA_GEMV"] = "off"
    try:
        proc, port = base.start_server(model_dir, "--device", "cuda", binary=BINARY)
    finally:
        if old is None:
            del os.environ["PAGODA_CUDA_GEMV"]
        else:
            os.environ["PAGODA_CUDA_GEMV"] = old
    yield port
    base.stop_server(proc)


@pytest.fixture
def cuda_client(cuda_server):
    return openai.OpenAI(base_url=f"http://127.0.0.1:{cuda_server}/v1", api_key="unused", max_retries=0, timeout=300)


def test_cuda_completion_stream_equals_non_stream(cuda_client):
    base.test_completion_stream_equals_non_stream(cuda_client)


def test_cuda_chat_stream_equals_non_stream(cuda_client):
    base.test_chat_stream_equals_non_stream(cuda_client)


def test_cuda_concurrent_streams_equal_non_stream(cuda_client):
    # Smaller than the CPU server's (the emulated device is slow): 8 seeded streams of 48 tokens.
    base.concurrent_streams_equal_non_stream(cuda_client, streams=8, max_tokens=48, rounds=1)


def test_cuda_logprobs(cuda_client):
    base.test_logprobs(cuda_client)


def test_cuda_disconnect_frees_kv_blocks(cuda_server):
    base.test_disconnect_frees_kv_blocks(cuda_server)
