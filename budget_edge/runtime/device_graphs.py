"""Three tiny ONNX graphs, serialized: the runtime runs them where its tensors
live (on the GPU) and needs no `onnx` package for it. Written by
tools/device_graphs.py, which says what each computes; do not edit by hand.
"""

import base64

GATHER_ROWS = base64.b64decode(
    "CAgSC2J1ZGdldC1lZGdlOmUKJgoEZGF0YQoEcm93cxIDb3V0IgZHYXRoZXIqCwoEYXhpcxgAoAECEgtnYXRoZXJf"
    "cm93c1oMCgRkYXRhEgQKAggBWhMKBHJvd3MSCwoJCAcSBQoDEgFrYgsKA291dBIECgIIAUIECgAQEQ=="
)

SCATTER_ROWS = base64.b64decode(
    "CAgSC2J1ZGdldC1lZGdlOnoKJQoEZGF0YQoEcm93cwoHdXBkYXRlcxIDb3V0IglTY2F0dGVyTkQSDHNjYXR0ZXJf"
    "cm93c1oMCgRkYXRhEgQKAggBWhcKBHJvd3MSDwoNCAcSCQoDEgFrCgIIAVoPCgd1cGRhdGVzEgQKAggBYgsKA291"
    "dBIECgIIAUIECgAQEQ=="
)

PREPROCESS = base64.b64decode(
    "CAgSC2J1ZGdldC1lZGdlOt8CCiMKBnBpeGVscxIIYXNfZmxvYXQiBENhc3QqCQoCdG8YAaABAgouCghhc19mbG9h"
    "dBIEbmNodyIJVHJhbnNwb3NlKhEKBHBlcm1AAEADQAFAAqABBwoaCgRuY2h3CgVzY2FsZRIGc2NhbGVkIgNNdWwK"
    "GwoGc2NhbGVkCgVzaGlmdBIFaW1hZ2UiA1N1YhIKcHJlcHJvY2Vzc1o4CgZwaXhlbHMSLgosCAISKAoHEgViYXRj"
    "aAoIEgZoZWlnaHQKBxIFd2lkdGgKChIIY2hhbm5lbHNaJwoFc2NhbGUSHgocCAESGAoCCAEKChIIY2hhbm5lbHMK"
    "AggBCgIIAVonCgVzaGlmdBIeChwIARIYCgIIAQoKEghjaGFubmVscwoCCAEKAggBYjcKBWltYWdlEi4KLAgBEigK"
    "BxIFYmF0Y2gKChIIY2hhbm5lbHMKCBIGaGVpZ2h0CgcSBXdpZHRoQgQKABAR"
)
