"""Model IO: where a model is (sources, GGUF conversion), what is in its checkpoint (safetensors headers,
streamed tensors), which of its layers are analysed (discovery), how it is instantiated (transformers,
tokenizer, a compressed folder with its factored `LowRankLinear` layers), how it is identified (fingerprints)
and described (model info). Knows no compression algorithm: computing factors and plans is `compression`.
"""
from __future__ import annotations

from .discovery import discover_from_names, discovery_key, source_layers
from .fingerprint import file_sha256, files_fingerprint, module_fingerprint, source_fingerprint
from .info import SOURCE_KINDS, ModelInfo, describe_model, expect_kind, guess_kind
from .layers import (LayerInfo, count_parameters, dense_weight, discover_layers, discovery_notes, find_blocks,
                     first_non_finite, is_factored, linear_weight, select_layers, set_module, unique_parameters)
from .build import building, empty_weights
from .placement import WEIGHT_DTYPES, available_bytes, check_fits, dtype_name, placement, weights_dtype
from .compressed import FORMAT, load_compressed, read_manifest
from .loading import (check_seqlen, check_source_seqlen, load_model, load_pretrained, load_tokenizer, max_positions,
                      meta_model)
from .lowrank import LowRankLinear
from .source import EMBEDDED_LABEL, MANIFEST, ModelSource, embedded_gguf, resolve_model
from .tensors import (STORED_DTYPES, ShardReader, ShardWriter, TensorIndex, index_params, read_header, stored_dtypes,
                      stream_tensors, tensor_index)

__all__ = ["FORMAT", "LowRankLinear", "dense_weight", "load_compressed", "load_model", "read_manifest",
           "WEIGHT_DTYPES", "available_bytes", "check_fits", "dtype_name", "placement", "weights_dtype",
           "EMBEDDED_LABEL", "MANIFEST", "SOURCE_KINDS", "LayerInfo", "ModelInfo", "ModelSource", "TensorIndex", "check_seqlen", "check_source_seqlen", "max_positions",
           "building", "count_parameters", "describe_model", "discover_from_names", "empty_weights", "discover_layers", "discovery_key",
           "discovery_notes", "embedded_gguf", "expect_kind", "file_sha256", "files_fingerprint", "find_blocks", "first_non_finite",
           "guess_kind", "index_params", "is_factored", "linear_weight", "load_pretrained", "load_tokenizer",
           "meta_model", "module_fingerprint", "read_header", "resolve_model", "select_layers", "set_module",
           "source_fingerprint", "source_layers", "stored_dtypes", "stream_tensors", "tensor_index", "STORED_DTYPES",
           "ShardReader", "ShardWriter",
           "unique_parameters"]
