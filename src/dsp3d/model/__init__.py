"""The networks: KPConv and its kernel graph, KPFCNN, the DSP reallocation modules and DSPModel.

Layer 6 (docs/architecture.md): imports data, levels, methods, progress, io, config and batching (the
Batch type).
"""
