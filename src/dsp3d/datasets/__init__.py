"""The datasets: the generated rooms, S3DIS, ScanNet and a folder of the user's clouds, each as loadable
scene sources split into train / val / test (registry.dataset_split).

Layer 3 (docs/architecture.md): imports data, levels, methods, progress, io and config.
"""
