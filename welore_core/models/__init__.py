"""Model IO: where a model is (sources, GGUF conversion), what is in its checkpoint (safetensors headers,
streamed tensors), which of its layers are analysed (discovery), how it is instantiated (transformers,
tokenizer, a compressed folder with its factored `LowRankLinear` layers), how it is identified (fingerprints)
and described (model info). Knows no compression algorithm: computing factors and plans is `compression`.
"""
from __future__ import annotations

from .build import building, empty_weights
from .compressed import FORMAT, load_compressed, read_manifest
from .discovery import discover_from_names, discovery_key, source_layers
from .fingerprint import dense_source, file_sha256, files_fingerprint, module_fingerprint, source_fingerprint
from .info import SOURCE_KINDS, ModelInfo, describe_model, expect_kind, guess_kind
from .layers import (LayerInfo, count_parameters, dense_weight, discover_layers, discovery_notes, find_blocks,
                     first_non_finite, is_factored, linear_weight, select_layers, set_module, unique_parameters)
from .loading import (check_seqlen, check_source_seqlen, load_model, load_pretrained, load_tokenizer, max_positions,
                      meta_model)
from .lowrank import LowRankLinear
from .placement import WEIGHT_DTYPES, available_bytes, check_fits, dtype_name, placement, weights_dtype
from .source import EMBEDDED_LABEL, FINETUNE_RECORD, MANIFEST, ModelSource, embedded_gguf, resolve_model
from .tensors import (STORED_DTYPES, ShardReader, ShardWriter, TensorIndex, index_params, read_header, stored_dtypes,
                      stream_tensors, tensor_index)

__all__ = ["EMBEDDED_LABEL", "FINETUNE_RECORD", "FORMAT", "MANIFEST", "SOURCE_KINDS", "STORED_DTYPES", "WEIGHT_DTYPES",
           "available_bytes", "building", "check_fits", "check_seqlen", "check_source_seqlen", "count_parameters",
           "dense_weight", "describe_model", "discover_from_names", "discover_layers", "discovery_key",
           "discovery_notes", "dtype_name", "embedded_gguf", "empty_weights", "expect_kind", "file_sha256",
           "dense_source", "files_fingerprint", "find_blocks", "first_non_finite", "guess_kind", "index_params", "is_factored",
           "LayerInfo", "linear_weight", "load_compressed", "load_model", "load_pretrained", "load_tokenizer",
           "LowRankLinear", "max_positions", "meta_model", "ModelInfo", "ModelSource", "module_fingerprint",
           "placement", "read_header", "read_manifest", "resolve_model", "select_layers", "set_module",
           "ShardReader", "ShardWriter", "source_fingerprint", "source_layers", "stored_dtypes", "stream_tensors",
           "tensor_index", "TensorIndex", "unique_parameters", "weights_dtype"]
