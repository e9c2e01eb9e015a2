"""``fraudstack train``: point-in-time training sets, candidate models, ONNX export, registry.

:mod:`.dataset` builds labelled sets with the shared feature code, :mod:`.models` defines the
candidates, :mod:`.evaluate` the metrics, :mod:`.export` the ONNX export and its check,
:mod:`.plots` the pictures, :mod:`.job` the store-to-registry run and :mod:`.handbook` (with
:mod:`.report`) the Fraud Detection Handbook's protocol.
"""
