"""Writes the starting seeds of the committed corpus (corpus/NAME/seed-*).

    python tests/fuzz/make_seeds.py

options: the custom options the converter writes (tflm_caps.converter.
options.encode) for each operator and routing count, and the same maps
written with other FlexBuffer encodings the reader must accept.  prepare,
kernels: each operator's default case (a single selector byte; the
harnesses read missing bytes as 0, which decodes to a small valid call),
and for the Efficient-CapsNet operators and packed int4 weights their
selector with D_in 2 (int4 needs N_out*D_out*D_in even to be valid).
Reproducers of fixed findings are kept beside them as regress-* files.
"""
import array
from pathlib import Path

from flatbuffers import flexbuffers

from tflm_caps.converter import options

CORPUS = Path(__file__).resolve().parent / "corpus"


def _class_caps(routings, store=1):
    return {"num_routing": routings, "store_predictions": store, "u_hat_scale": 0.03,
            "s_scales": [0.05 * (r + 1) for r in range(routings)],
            "b_scales": [0.1 * (r + 1) for r in range(routings - 1)]}


def option_seeds():
    seeds = {
        "squash": options.encode("TFLMCaps_Squash", {}),
        "length": options.encode("TFLMCaps_Length", {}),
        # version 1: the squash fills its own gain table (version 2 reads it
        # from input 1, which the options harness's node does not have)
        "squash-v1": options.encode("TFLMCaps_Squash", {"version": 1}),
        "efficient-squash": options.encode("TFLMCaps_EfficientSquash", {}),
        "self-attention": options.encode("TFLMCaps_SelfAttentionCaps",
                                          {"u_hat_scale": 0.05, "s_scale": 0.02}),
    }
    for r in (1, 2, 3, 8):
        seeds[f"class-caps-r{r}"] = options.encode("TFLMCaps_ClassCaps", _class_caps(r))
    seeds["class-caps-recompute"] = options.encode("TFLMCaps_ClassCaps", _class_caps(3, 0))
    # the same keys in encodings another writer may choose: float64
    # vectors, untyped vectors, indirect floats, uint version
    fbb = flexbuffers.Builder()
    with fbb.Map():
        fbb.Key("b_scales")
        fbb.TypedVectorFromElements(array.array("d", [0.1, 0.2]))
        fbb.IndirectFloat("u_hat_scale", 0.03)
        fbb.UInt("num_routing", 3)
        fbb.Key("s_scales")
        fbb.VectorFromElements([0.05, 0.1, 0.15])
        fbb.UInt("version", 1)
    seeds["class-caps-encodings"] = bytes(fbb.Finish())
    return seeds


# A selector byte, then the harness's fz_int fields (selector byte and four
# value bytes each) up to D_in, which is 2 (selector 1: one random bit, 1).
_D_IN_2 = bytes([1, 1, 0, 0, 0])

# selector bytes of the newer operators (tests/fuzz/fuzz_prepare.cc,
# fuzz_kernels.c): their own range, so older reproducers keep their meaning
NEWER_SEEDS = {
    "prepare": {
        "efficient-squash": bytes([128]),
        "self-attention": bytes([129]),
        "self-attention-din2": bytes([129]) + bytes(10) + _D_IN_2,
        "class-caps-int4": bytes([130]) + bytes(10) + _D_IN_2,
    },
    "kernels": {
        "efficient-squash": bytes([160]),
        "self-attention": bytes([161]),
        "predictions-s4": bytes([162]) + bytes(5) + _D_IN_2,
        "class-caps-s4": bytes([163]) + bytes(5) + _D_IN_2,
    },
}


def main():
    for name, data in option_seeds().items():
        path = CORPUS / "options" / f"seed-{name}"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
    for harness, count in (("prepare", 3), ("kernels", 5)):
        for op in range(count):
            path = CORPUS / harness / f"seed-default-{op}"
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(bytes([op]))
    for harness, seeds in NEWER_SEEDS.items():
        for name, data in seeds.items():
            (CORPUS / harness / f"seed-{name}").write_bytes(data)


if __name__ == "__main__":
    main()
