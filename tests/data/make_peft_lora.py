#!/usr/bin/env python3
"""Writes tests/data/peft_lora/: a PEFT-style LoRA adapter made without headwise,
with the standard library only (struct + json; no numpy, no torch), for
safetensors_test to load.

Model: 2 layers, model_dim 8, 2 query heads and 1 kv head of dim 4, so
q_proj/o_proj are 8 -> 8 and k_proj/v_proj 8 -> 4. Rank 2 on q_proj and v_proj,
lora_alpha 4, rsLoRA. Element j of a factor is (layer + 1) * (j + 1) / 64 for A
and -(layer + 1) * (j + 1) / 128 for B (exact in binary floating point), A in F32,
B in F64 for layer 0 and BF16 for layer 1, so the loader converts three dtypes.
The JSON header lists the tensors in reverse name order and the data follows in
the order of the list: safetensors fixes the data by offsets, not by key order.

Run:  python3 tests/data/make_peft_lora.py   (rewrites the two files)
"""
import json
import os
import struct

OUT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "peft_lora")
R, MODEL, KV = 2, 8, 4
SHAPES = {"q": (8, MODEL), "v": (KV, MODEL)}  # (out, in)


def values(layer, count, scale):
    return [(layer + 1) * (j + 1) * scale for j in range(count)]


def pack(dtype, xs):
    if dtype == "F32":
        return struct.pack("<%df" % len(xs), *xs)
    if dtype == "F64":
        return struct.pack("<%dd" % len(xs), *xs)
    if dtype == "BF16":  # the top half of the float's bits (these values are exact)
        return b"".join(struct.pack("<H", struct.unpack("<I", struct.pack("<f", x))[0] >> 16) for x in xs)
    raise ValueError(dtype)


def main():
    tensors = []
    for layer in range(2):
        for p, (out, inp) in SHAPES.items():
            prefix = "base_model.model.model.layers.%d.self_attn.%s_proj." % (layer, p)
            tensors.append((prefix + "lora_A.weight", "F32", [R, inp], values(layer, R * inp, 1 / 64)))
            tensors.append((prefix + "lora_B.weight", "F64" if layer == 0 else "BF16", [out, R],
                            values(layer, out * R, -1 / 128)))
    tensors.sort(reverse=True)
    header, data = {"__metadata__": {"format": "pt"}}, b""
    for name, dtype, shape, xs in tensors:
        blob = pack(dtype, xs)
        header[name] = {"dtype": dtype, "shape": shape, "data_offsets": [len(data), len(data) + len(blob)]}
        data += blob
    text = json.dumps(header).encode()
    text += b" " * (-len(text) % 8)
    os.makedirs(OUT, exist_ok=True)
    with open(os.path.join(OUT, "adapter_model.safetensors"), "wb") as f:
        f.write(struct.pack("<Q", len(text)) + text + data)
    config = {"peft_type": "LORA", "task_type": "CAUSAL_LM", "base_model_name_or_path": "tiny-test-model",
              "r": R, "lora_alpha": 4, "lora_dropout": 0.05, "use_rslora": True,
              "target_modules": ["v_proj", "q_proj"], "bias": "none", "fan_in_fan_out": False,
              "inference_mode": True, "modules_to_save": None, "rank_pattern": {}, "alpha_pattern": {},
              "init_lora_weights": True, "layers_to_transform": None, "use_dora": False}
    with open(os.path.join(OUT, "adapter_config.json"), "w") as f:
        json.dump(config, f, indent=2)
        f.write("\n")


if __name__ == "__main__":
    main()
